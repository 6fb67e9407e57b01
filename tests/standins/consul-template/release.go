package main

import (
	"fmt"
	"math"
)

// version is the consul-template release the stand-in behaves as. It is set
// at build time:
//
//	go build -ldflags "-X main.version=0.19.0" .
//
// The default is the lab's default release.
var version = "0.19.5"

// release holds what differs, in what the lab meets, between the releases the
// stand-in implements (hashicorp/consul-template CHANGELOG.md and
// `git diff v0.19.0 v0.19.5`). Each field is true from the release that
// changed it on.
type release struct {
	version string

	// 0.19.4 (GH-1028, fixed by GH-1031): the retry sleep is capped before it
	// is computed, so 2^retry * backoff no longer overflows once the cap is
	// reached (config/retry.go).
	capsBackoffFirst bool
	// 0.19.4 (GH-1026): colons after the second one belong to the command
	// (config/template.go ParseTemplateConfig).
	colonsInCommand bool
	// 0.19.4 (GH-1037): a rendered file keeps the mode of the file it replaces
	// (manager/renderer.go AtomicWrite).
	keepsFileMode bool
	// 0.19.4: the `indent` template function (template/funcs.go).
	indentFunc bool
	// 0.19.4 (GH-1027): `service "name~near"` keeps Consul's RTT order
	// (dependency/health_service.go).
	nearKeepsOrder bool
	// 0.19.1: templates run with missingkey=zero (template/template.go), so a
	// missing map key renders the zero value instead of "<no value>".
	missingKeyZero bool
	// 0.19.5 (GH-1088): "(runner) initiating run" is logged at DEBUG, not INFO.
	runLogAtDebug bool
	// 0.19.5: SIGWINCH is a known signal name (signals/signals_unix.go).
	sigwinch bool
}

// releases are the versions the stand-in can be built as: the lab's old
// default (the seed's) and its new one.
var releases = map[string]release{
	"0.19.0": {version: "0.19.0"},
	"0.19.5": {
		version:          "0.19.5",
		capsBackoffFirst: true,
		colonsInCommand:  true,
		keepsFileMode:    true,
		indentFunc:       true,
		nearKeepsOrder:   true,
		missingKeyZero:   true,
		runLogAtDebug:    true,
		sigwinch:         true,
	},
}

func releaseFor(v string) (release, error) {
	r, ok := releases[v]
	if !ok {
		return release{}, fmt.Errorf("this consul-template stand-in was built as version %q, which it does not "+
			"implement; rebuild it with -ldflags \"-X main.version=0.19.0\" or \"-X main.version=0.19.5\"", v)
	}
	return r, nil
}

func (r release) humanVersion() string {
	return fmt.Sprintf("consul-template v%s (standin)", r.version)
}

// amd64Int64 converts f to int64 the way Go does on amd64 (CVTTSD2SQ): NaN
// and values outside the int64 range become math.MinInt64. Go leaves that
// case implementation-defined; the real tool's arithmetic depends on it, and
// its release binaries (linux_amd64) behave like this.
func amd64Int64(f float64) int64 {
	if f != f || f >= 1<<63 || f < -(1<<63) {
		return math.MinInt64
	}
	return int64(f)
}

package main

// Behaviour that differs between consul-template v0.19.0 and v0.19.5, pinned
// per release. Sources: hashicorp/consul-template at the tags v0.19.0 and
// v0.19.5 (file and function named in each test).

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVersionFlag: -v prints the release the stand-in was built as, on
// stderr (cli.go Run: `fmt.Fprintf(cli.errStream, "%s\n", humanVersion)`).
// A build for a release the stand-in does not implement refuses to run.
func TestVersionFlag(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		var out, errOut bytes.Buffer
		c := newCLI(nil, &out, &errOut)
		c.version = rel.version
		if code := c.run([]string{"-v"}); code != exitCodeOK {
			t.Fatalf("exit %d", code)
		}
		if want := "consul-template v" + rel.version + " (standin)\n"; errOut.String() != want || out.Len() != 0 {
			t.Fatalf("stderr %q stdout %q, want %q on stderr", errOut.String(), out.String(), want)
		}
	})

	var errOut bytes.Buffer
	c := newCLI(nil, &bytes.Buffer{}, &errOut)
	c.version = "0.20.0"
	if code := c.run([]string{"-v"}); code != exitCodeConfigError {
		t.Fatalf("exit %d for an unimplemented release", code)
	}
	if !strings.Contains(errOut.String(), `built as version "0.20.0", which it does not implement; rebuild it with`) {
		t.Fatalf("stderr %q", errOut.String())
	}
}

func collectBackoffs(c retryConfig, retries int) []time.Duration {
	var got []time.Duration
	for i := 0; i < retries; i++ {
		ok, d := c.next(i)
		if !ok {
			break
		}
		got = append(got, d)
	}
	return got
}

// TestRetryBackoffV0190Overflows pins config/retry.go RetryFunc at v0.19.0:
//
//	base := math.Pow(2, float64(retry))
//	sleep := time.Duration(base) * TimeDurationVal(c.Backoff)
//	if maxSleep > 0 && maxSleep < sleep { return true, maxSleep }
//	return true, sleep
//
// The product is computed before the cap and wraps around int64 (GH-1028):
// with the lab's flags (250ms, max 10s) retries 6-35 sleep 10s, from retry
// 36 on most sleeps are negative (no wait at all), and from retry 57 every
// sleep is 0.
func TestRetryBackoffV0190Overflows(t *testing.T) {
	c := retryConfig{enabled: true, backoff: 250 * time.Millisecond, maxBackoff: 10 * time.Second}
	got := collectBackoffs(c, 200)

	for i, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if got[i] != want {
			t.Errorf("retry %d slept %s, want %s", i, got[i], want)
		}
	}
	for i := 6; i <= 35; i++ {
		if got[i] != 10*time.Second {
			t.Errorf("retry %d slept %s, want the 10s cap", i, got[i])
		}
	}
	negative := 0
	for i := 36; i <= 56; i++ {
		switch {
		case got[i] < 0:
			negative++
		case got[i] != 10*time.Second:
			t.Errorf("retry %d slept %s: a wrapped product is negative or over the cap", i, got[i])
		}
	}
	if got[36] >= 0 || negative == 0 {
		t.Errorf("no overflow from retry 36: %v", got[36:57])
	}
	for i := 57; i < len(got); i++ {
		if got[i] != 0 {
			t.Fatalf("retry %d slept %s, want 0 (2^57 * 250ms is 0 mod 2^64)", i, got[i])
		}
	}
	// Past 2^63 the float-to-int conversion gives MinInt64 on amd64; times an
	// odd backoff that stays MinInt64 (negative: no wait either).
	if _, d := (retryConfig{enabled: true, backoff: 3}).next(70); d != time.Duration(-1<<63) {
		t.Errorf("retry 70 with a 3ns backoff slept %d", d)
	}
}

// TestRetryBackoffV0195CapsFirst pins config/retry.go RetryFunc at v0.19.5
// (GH-1031):
//
//	attemptsTillMaxBackoff := int(math.Log2(maxSleep.Seconds() / baseSleep.Seconds()))
//	if retry > attemptsTillMaxBackoff { return true, maxSleep }
//
// With a cap every sleep past the cap is the cap, however long the outage.
// Without one (max 0) the product still overflows, as in the real tool.
func TestRetryBackoffV0195CapsFirst(t *testing.T) {
	c := retryConfig{enabled: true, backoff: 250 * time.Millisecond, maxBackoff: 10 * time.Second, capsBackoffFirst: true}
	got := collectBackoffs(c, 5000)
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, d := range got {
		if i < len(want) && d != want[i] || i >= len(want) && d != 10*time.Second {
			t.Fatalf("retry %d slept %s", i, d)
		}
	}
	// int(log2(1s/1.5s)) = int(-0.58) truncates to 0: retry 0 sleeps the
	// backoff, over the cap.
	small := retryConfig{enabled: true, backoff: 1500 * time.Millisecond, maxBackoff: time.Second, capsBackoffFirst: true}
	if got := collectBackoffs(small, 3); got[0] != 1500*time.Millisecond || got[1] != time.Second || got[2] != time.Second {
		t.Errorf("backoff over the cap: %v", got)
	}
	uncapped := retryConfig{enabled: true, backoff: 250 * time.Millisecond, capsBackoffFirst: true}
	if _, d := uncapped.next(57); d != 0 {
		t.Errorf("uncapped retry 57 slept %s, want the overflowed 0", d)
	}
}

func TestRetryLimits(t *testing.T) {
	c := retryConfig{enabled: true, attempts: 4, backoff: 250 * time.Millisecond, maxBackoff: time.Second}
	if got := collectBackoffs(c, 100); len(got) != 4 || got[3] != time.Second {
		t.Errorf("4 attempts gave %v", got)
	}
	if ok, _ := (retryConfig{enabled: false, attempts: 5}).next(0); ok {
		t.Error("disabled retry retried")
	}
}

var retryLineRe = regexp.MustCompile(`\(retry attempt (\d+) after "([^"]+)"\)`)

// retrySleeps parses the retry lines of a log: attempt number -> sleep.
func retrySleeps(t *testing.T, log string) map[int]time.Duration {
	t.Helper()
	out := map[int]time.Duration{}
	for _, m := range retryLineRe.FindAllStringSubmatch(log, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		d, err := time.ParseDuration(m[2])
		if err != nil {
			t.Fatalf("retry line with %q: %v", m[2], err)
		}
		out[n] = d
	}
	return out
}

// TestBackoffOverflowEndToEnd: with tiny backoffs a view reaches v0.19.0's
// overflow within a second (watch/view.go poll logs every retry as
// `[WARN] (view) %s (retry attempt %d after %q)`): from attempt 59 (retry 58,
// 2^58 * 1ms = 0 mod 2^64) it retries with no wait, one log line each.
// v0.19.5 keeps sleeping the cap.
func TestBackoffOverflowEndToEnd(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		p := startAs(t, rel.version, "-consul-addr", freeAddr(t),
			"-consul-retry-attempts=0", "-consul-retry-backoff=1ms", "-consul-retry-max-backoff=1ms",
			"-template", writeTemplate(t, dir, webTemplate)+":"+filepath.Join(dir, "out"))
		eventually(t, 20*time.Second, "70 retries", func() bool {
			return strings.Contains(p.stderr.String(), "(retry attempt 70 after")
		})
		sleeps := retrySleeps(t, p.stderr.String())
		for n := 1; n <= 70; n++ {
			d, ok := sleeps[n]
			if !ok {
				t.Fatalf("no retry attempt %d in the log", n)
			}
			switch {
			case rel.capsBackoffFirst && d != time.Millisecond:
				t.Fatalf("v%s attempt %d slept %s, want the 1ms cap", rel.version, n, d)
			case !rel.capsBackoffFirst && n <= 44 && d != time.Millisecond:
				t.Fatalf("v%s attempt %d slept %s before the overflow", rel.version, n, d)
			case !rel.capsBackoffFirst && n >= 59 && d != 0:
				t.Fatalf("v%s attempt %d slept %s, want 0 after the overflow", rel.version, n, d)
			}
		}
	})
}

// TestTemplateCommandColons pins config/template.go ParseTemplateConfig:
// v0.19.0 `default: return nil, ErrTemplateInvalidFormat`; v0.19.5
// `command = strings.Join(parts[2:], ":")` (GH-1026), which also indexes
// parts[0] and parts[1] unchecked.
func TestTemplateCommandColons(t *testing.T) {
	const spec = "in:out:curl -fsS http://127.0.0.1:8080/reload"
	if _, err := parseTemplateSpec(spec, releases["0.19.0"]); err != errTemplateInvalidFormat {
		t.Errorf("v0.19.0 accepted a command with colons: %v", err)
	}
	got, err := parseTemplateSpec(spec, releases["0.19.5"])
	if err != nil || got != (templateSpec{Source: "in", Destination: "out", Command: "curl -fsS http://127.0.0.1:8080/reload"}) {
		t.Errorf("v0.19.5: %+v %v", got, err)
	}
	// Empty parts vanish before the join.
	if got, _ := parseTemplateSpec("in:out:a::b", releases["0.19.5"]); got.Command != "a:b" {
		t.Errorf("v0.19.5 joined %q", got.Command)
	}

	var stderr bytes.Buffer
	c := newCLI(nil, &bytes.Buffer{}, &stderr)
	c.version = "0.19.0"
	if code := c.run([]string{"-template", "in:out:cmd:extra"}); code != exitCodeParseFlagsError || !strings.Contains(stderr.String(), "template: invalid format") {
		t.Errorf("v0.19.0: exit %d, stderr %q", code, stderr.String())
	}

	defer func() {
		if recover() == nil {
			t.Error("v0.19.5 did not panic on a -template of colons only")
		}
	}()
	_, _ = parseTemplateSpec(":::", releases["0.19.5"])
}

// TestFileMode pins manager/renderer.go AtomicWrite: v0.19.0 chmods the new
// file to the template perms (0644 from the command line); v0.19.5 keeps the
// mode of the file it replaces (`perms = currentInfo.Mode()`, GH-1037) and
// uses DefaultFilePerms 0644 for a new one. The umask plays no part.
func TestFileMode(t *testing.T) {
	old := syscall.Umask(0077)
	defer syscall.Umask(old)
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		fresh, existing := filepath.Join(dir, "fresh"), filepath.Join(dir, "existing")
		if err := os.WriteFile(existing, []byte("old"), 0600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(existing, 0640); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{fresh, existing} {
			if _, err := render(path, []byte("new"), rel.keepsFileMode, false, nil); err != nil {
				t.Fatal(err)
			}
		}
		wantExisting := os.FileMode(0644)
		if rel.keepsFileMode {
			wantExisting = 0640
		}
		if m := fileMode(t, fresh); m != 0644 {
			t.Errorf("new file mode %v, want 0644", m)
		}
		if m := fileMode(t, existing); m != wantExisting {
			t.Errorf("replaced file mode %v, want %v", m, wantExisting)
		}
	})
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestTemplateLanguageByRelease: `indent` exists from v0.19.4 (template/
// funcs.go indent: every line that is not empty gets the prefix); from
// v0.19.1 templates run with missingkey=zero (template/template.go
// Execute), so a missing key of a map[string]string renders "" instead of
// "<no value>".
func TestTemplateLanguageByRelease(t *testing.T) {
	web, _ := newHealthServiceQuery("web", releases[version])
	br := newBrain()
	br.remember(web, []*HealthService{{Node: "n1", NodeMeta: map[string]string{"rack": "r1"}}})
	run := func(rel release, text string) (string, error) {
		res, err := (&tmpl{contents: text}).execute(br, nil, rel)
		if err != nil {
			return "", err
		}
		return string(res.output), nil
	}

	if got, err := run(releases["0.19.5"], "{{\"a\\n\\nb\\n\" | indent 2}}"); err != nil || got != "  a\n\n  b\n" {
		t.Errorf("v0.19.5 indent: %q %v", got, err)
	}
	if _, err := run(releases["0.19.0"], `{{"a" | indent 2}}`); err == nil || !strings.Contains(err.Error(), `function "indent" not defined`) {
		t.Errorf("v0.19.0 knows indent: %v", err)
	}

	const meta = `{{range service "web"}}[{{.NodeMeta.rack}}][{{.NodeMeta.row}}]{{end}}`
	if got, _ := run(releases["0.19.0"], meta); got != "[r1][<no value>]" {
		t.Errorf("v0.19.0 missing key: %q", got)
	}
	if got, _ := run(releases["0.19.5"], meta); got != "[r1][]" {
		t.Errorf("v0.19.5 missing key: %q", got)
	}
}

// TestNearOrder pins dependency/health_service.go Fetch: v0.19.0 always does
// sort.Stable(ByNodeThenID(list)); v0.19.5 only `if d.near == ""`
// (GH-1027), so "~near" keeps the order Consul answered in (by RTT).
func TestNearOrder(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil,
		fakeInstance{Node: "c", NodeAddr: "10.0.0.3", ID: "web-c", Port: 1},
		fakeInstance{Node: "a", NodeAddr: "10.0.0.1", ID: "web-a", Port: 1},
		fakeInstance{Node: "b", NodeAddr: "10.0.0.2", ID: "web-b", Port: 1},
	)
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out")
		p := startAs(t, rel.version, "-once", "-consul-addr", f.addr(), "-template",
			writeTemplate(t, dir, `{{range service "web~_agent"}}{{.Node}}{{end}} {{range service "web"}}{{.Node}}{{end}}`)+":"+dst)
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr)
		}
		want := "abc abc"
		if rel.nearKeepsOrder {
			want = "cab abc"
		}
		if got := fileContent(dst); got != want {
			t.Errorf("rendered %q, want %q", got, want)
		}
	})
}

// TestRunLogLevel: "(runner) initiating run" is INFO in v0.19.0 and DEBUG
// in v0.19.5 (manager/runner.go Run, GH-1088): with -log-level=info, as the
// lab runs, only v0.19.0 prints it on every pass.
func TestRunLogLevel(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		p := startAs(t, rel.version, "-once", "-log-level=info", "-consul-addr", f.addr(),
			"-template", writeTemplate(t, dir, webTemplate)+":"+filepath.Join(dir, "out"))
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr)
		}
		logged := strings.Contains(p.stderr.String(), "[INFO] (runner) initiating run")
		if logged == rel.runLogAtDebug {
			t.Errorf("v%s: initiating run at INFO = %v\n%s", rel.version, logged, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "[INFO] (runner) rendered ") {
			t.Errorf("no rendered line:\n%s", p.stderr)
		}
	})
}

// TestSigwinchName: signals/signals_unix.go SignalLookup gains SIGWINCH in
// v0.19.5.
func TestSigwinchName(t *testing.T) {
	if _, err := parseSignal("SIGWINCH", releases["0.19.0"]); err == nil {
		t.Error("v0.19.0 knows SIGWINCH")
	}
	if s, err := parseSignal("sigwinch", releases["0.19.5"]); err != nil || s != syscall.SIGWINCH {
		t.Errorf("v0.19.5: %v %v", s, err)
	}
}

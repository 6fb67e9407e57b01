package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

func TestParseTemplateSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want templateSpec
		err  bool
	}{
		{in: "in.ctmpl", want: templateSpec{Source: "in.ctmpl"}},
		{in: "/a/in.ctmpl:/etc/nginx/conf.d/default.conf", want: templateSpec{Source: "/a/in.ctmpl", Destination: "/etc/nginx/conf.d/default.conf"}},
		{in: "/a/in.ctmpl:/out.conf:nginx -s reload", want: templateSpec{Source: "/a/in.ctmpl", Destination: "/out.conf", Command: "nginx -s reload"}},
		{in: "/a/in.ctmpl:/out.conf:/bin/sh -c 'nginx -s reload || true'", want: templateSpec{Source: "/a/in.ctmpl", Destination: "/out.conf", Command: "/bin/sh -c 'nginx -s reload || true'"}},
		// Windows drive letters stay attached to their part.
		{in: `C:\in.ctmpl:D:\out`, want: templateSpec{Source: `C:\in.ctmpl`, Destination: `D:\out`}},
		// v0.19.0 rejects a command containing a colon (it splits on all).
		{in: "in:out:curl -fsS http://127.0.0.1:8080/reload", err: true},
		{in: "   ", err: true},
		// Quirk of the real splitter: a one-letter part followed by a colon
		// is taken for a drive letter.
		{in: "a:b:c", want: templateSpec{Source: "a:b", Destination: "c"}},
	} {
		got, err := parseTemplateSpec(tc.in, releases["0.19.0"])
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseTemplateSpec(%q) = %+v, %v; want %+v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseWait(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want waitConfig
		err  bool
	}{
		{in: "5s", want: waitConfig{enabled: true, min: 5 * time.Second, max: 20 * time.Second}},
		{in: "2s:10s", want: waitConfig{enabled: true, min: 2 * time.Second, max: 10 * time.Second}},
		{in: "0s", want: waitConfig{}},
		{in: "10s:2s", err: true},
		{in: "1s:2s:3s", err: true},
		{in: "-1s", err: true},
		{in: "soon", err: true},
	} {
		got, err := parseWait(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseWait(%q) = %+v, %v; want %+v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	os.Unsetenv("CONSUL_HTTP_ADDR")
	rel := releases[version]
	cfg, opts, err := parseFlags([]string{
		"-consul-addr=http://10.0.0.1:8500", "-template", "in.ctmpl:out.conf:cmd", "-template=in2:out2",
		"-wait", "1s:3s", "-once", "-dry", "-consul-retry=false", "-consul-retry-attempts", "0",
		"-consul-retry-backoff=1s", "-consul-retry-max-backoff", "5s", "-log-level=debug",
		"-kill-signal=sigterm", "-reload-signal", "SIGUSR1",
	}, rel)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.once || !opts.dry || opts.version {
		t.Errorf("opts = %+v", opts)
	}
	want := retryConfig{enabled: false, attempts: 0, backoff: time.Second, maxBackoff: 5 * time.Second, capsBackoffFirst: true}
	if cfg.retry != want {
		t.Errorf("retry = %+v", cfg.retry)
	}
	if cfg.consulAddr != "http://10.0.0.1:8500" || len(cfg.templates) != 2 || cfg.templates[1].Destination != "out2" ||
		cfg.wait.max != 3*time.Second || cfg.logLevel != "debug" ||
		cfg.killSignal != syscall.SIGTERM || cfg.reloadSignal != syscall.SIGUSR1 {
		t.Errorf("cfg = %+v", cfg)
	}

	d, _, err := parseFlags(nil, rel)
	if err != nil {
		t.Fatal(err)
	}
	if d.retry != (retryConfig{enabled: true, attempts: 12, backoff: 250 * time.Millisecond, maxBackoff: time.Minute, capsBackoffFirst: true}) ||
		d.killSignal != syscall.SIGINT || d.reloadSignal != syscall.SIGHUP || d.commandTimeout != 30*time.Second ||
		d.maxStale != 2*time.Second {
		t.Errorf("defaults = %+v", d)
	}

	t.Setenv("CONSUL_HTTP_ADDR", "consul.service:8500")
	d.finalize()
	if d.consulAddr != "consul.service:8500" || d.logLevel != "WARN" {
		t.Errorf("finalize: %+v", d)
	}
}

func TestCLIExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"-v"}, exitCodeOK, "consul-template v0.19.5 (standin)\n"},
		{[]string{"-version"}, exitCodeOK, "consul-template v0.19.5 (standin)\n"},
		{[]string{"-h"}, exitCodeOK, "Usage: consul-template [options]"},
		{[]string{"-nope"}, exitCodeParseFlagsError, "flag provided but not defined: -nope"},
		{[]string{"extra"}, exitCodeParseFlagsError, `cli: extra args: ["extra"]`},
		{[]string{"-wait", "5s:1s"}, exitCodeParseFlagsError, "wait: min must be less than max"},
		{[]string{"-kill-signal", "SIGNOPE"}, exitCodeParseFlagsError, "invalid signal"},
		{[]string{"-exec", "nginx"}, exitCodeParseFlagsError, "not supported by the consul-template stand-in"},
		{[]string{"-log-level", "loud"}, exitCodeConfigError, `invalid log level "loud"`},
		{[]string{"-template", "/nonexistent.ctmpl:/tmp/x"}, exitCodeRunnerError, "[ERR] (cli) failed to read template"},
		{[]string{"-consul-addr", "ftp://x", "-template", "testdata/service.ctmpl:/tmp/x"}, exitCodeRunnerError, "Unknown protocol scheme: ftp"},
	} {
		var out, errOut bytes.Buffer
		code := newCLI(nil, &out, &errOut).run(tc.args)
		if code != tc.code || !strings.Contains(errOut.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), tc.code, tc.stderr)
		}
	}
}

func TestLogFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	l, err := newLogger(&buf, "info")
	if err != nil {
		t.Fatal(err)
	}
	l.Printf("[DEBUG] (runner) hidden")
	l.Printf(`[INFO] (runner) rendered "in" => "out"`)
	l.Printf("no level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	// 2026/01/01 00:00:00.000000 [INFO] ...
	if _, err := time.Parse("2006/01/02 15:04:05.000000", lines[0][:26]); err != nil || lines[0][26:] != ` [INFO] (runner) rendered "in" => "out"` {
		t.Errorf("format: %q (%v)", lines[0], err)
	}
}

func TestServiceQueryParsing(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web", "health.service(web|passing)"},
		{"web|passing", "health.service(web|passing)"},
		{"primary.web", "health.service(primary.web|passing)"},
		{"v1.2.web", "health.service(v1.2.web|passing)"},
		{"web|any", "health.service(web|any)"},
		{"web|warning,passing", "health.service(web|passing,warning)"},
		{"primary.web@dc2~_agent|critical", "health.service(primary.web@dc2~_agent|critical)"},
	} {
		d, err := newHealthServiceQuery(tc.in, releases[version])
		if err != nil || d.String() != tc.want {
			t.Errorf("%q -> %v, %v; want %s", tc.in, d, err, tc.want)
		}
	}
	for _, bad := range []string{"web|sick", "we b", ""} {
		if _, err := newHealthServiceQuery(bad, releases[version]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	d, _ := newHealthServiceQuery("primary.web", releases[version])
	if d.tag != "primary" || d.name != "web" || !d.passingOnly() {
		t.Errorf("%+v", d)
	}
	k, _ := newKVGetQuery("/app/config@dc1")
	if k.key != "app/config" || k.dc != "dc1" || k.String() != "kv.get(app/config@dc1)" {
		t.Errorf("%+v %s", k, k)
	}
}

func TestAggregatedStatus(t *testing.T) {
	check := func(id, status string) *HealthCheck { return &HealthCheck{CheckID: id, Status: status} }
	for _, tc := range []struct {
		checks []*HealthCheck
		want   string
	}{
		{nil, "passing"},
		{[]*HealthCheck{check("a", "passing"), check("b", "warning")}, "warning"},
		{[]*HealthCheck{check("a", "warning"), check("b", "critical")}, "critical"},
		{[]*HealthCheck{check("a", "critical"), check("_service_maintenance:web", "critical")}, "maintenance"},
		{[]*HealthCheck{check("a", "bogus")}, ""},
	} {
		if got := aggregatedStatus(tc.checks); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.checks, got, tc.want)
		}
	}
}

func TestParseCommandLine(t *testing.T) {
	t.Setenv("CT_TEST_VAR", "xyz")
	for _, tc := range []struct {
		in   string
		args []string
		rest string
		err  bool
	}{
		{in: "nginx -s reload", args: []string{"nginx", "-s", "reload"}},
		{in: "nginx -s reload || true", args: []string{"nginx", "-s", "reload"}, rest: "|| true"},
		{in: "a;b", args: []string{"a"}, rest: ";b"},
		{in: "/bin/sh -c 'nginx -s reload || true'", args: []string{"/bin/sh", "-c", "nginx -s reload || true"}},
		{in: `/bin/sh -c "echo a > b"`, args: []string{"/bin/sh", "-c", "echo a > b"}},
		{in: `echo a\ b "c d" 'e\f'`, args: []string{"echo", "a b", "c d", `e\f`}},
		{in: "echo $CT_TEST_VAR ${CT_TEST_VAR}", args: []string{"echo", "xyz", "xyz"}},
		{in: "echo `echo hello`", args: []string{"echo", "hello"}},
		{in: "echo 'unterminated", err: true},
	} {
		args, rest, err := parseCommandLine(tc.in)
		if (err != nil) != tc.err || !reflect.DeepEqual(args, tc.args) || rest != tc.rest {
			t.Errorf("%q -> %q %q %v; want %q %q err=%v", tc.in, args, rest, err, tc.args, tc.rest, tc.err)
		}
	}
}

// renderHelper evaluates a template that needs no Consul data.
func renderHelper(t *testing.T, text string) string {
	t.Helper()
	tp := &tmpl{contents: text}
	res, err := tp.execute(newBrain(), []string{"CONSUL_HTTP_ADDR=consul:8500"}, releases[version])
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return string(res.output)
}

func TestHelperFunctions(t *testing.T) {
	now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	defer func() { now = func() time.Time { return time.Now().UTC() } }()
	t.Setenv("CT_TEST_ENV", "from-env")

	for _, tc := range []struct{ tpl, want string }{
		{`{{env "CT_TEST_ENV"}} {{env "CONSUL_HTTP_ADDR"}} [{{env "CT_TEST_UNSET"}}]`, "from-env consul:8500 []"},
		{`{{"a,b,c" | split "," | join ";"}}`, "a;b;c"},
		{`{{split "," "  "}}`, "[]"},
		{`{{"a-b-c" | replaceAll "-" "_"}}`, "a_b_c"},
		{`{{"Web" | toLower}} {{"web" | toUpper}} {{"hello wide_world" | toTitle}}`, "web WEB Hello Wide_world"},
		{`[{{"  x  " | trimSpace}}]`, "[x]"},
		{`{{"web-01" | regexMatch "^web-[0-9]+$"}} {{"web-01" | regexReplaceAll "[0-9]" "N"}}`, "true web-NN"},
		{`{{if "a,b" | split "," | contains "b"}}yes{{end}} {{in ("a,b" | split ",") "c"}} {{"haystack" | contains "st"}}`, "yes false true"},
		{`{{"a,b" | split "," | containsAny (parseJSON "[\"x\",\"b\"]")}} {{"a,b" | split "," | containsAny (parseJSON "[\"x\"]")}}`, "true false"},
		{`{{"a,b,c" | split "," | containsAll (parseJSON "[\"a\",\"b\"]")}} {{"a,b" | split "," | containsNone (parseJSON "[\"a\",\"z\"]")}}`, "true false"},
		{`{{parseInt "42" | add 1}} {{10 | subtract 3}} {{2 | multiply 3.5}} {{7 | divide 2}} {{7 | modulo 4}}`, "43 7 7 3 3"},
		{`{{range loop 3}}{{.}}{{end}} {{range loop 2 5}}{{.}}{{end}}`, "012 234"},
		{`{{toJSON (parseJSON "{\"b\":[1,2],\"a\":\"<x>\"}")}}`, `{"a":"\u003cx\u003e","b":[1,2]}`},
		{`{{parseBool "true"}} {{parseFloat "1.5"}} {{parseUint ""}}`, "true 1.5 0"},
		{`{{timestamp}} {{timestamp "unix"}} {{timestamp "2006-01-02"}}`, "2026-01-02T03:04:05Z 1767323045 2026-01-02"},
		{`{{"hi" | base64Encode}} {{"aGk=" | base64Decode}}`, "aGk= hi"},
		{`{{scratch.Set "k" "v"}}{{scratch.Get "k"}} {{scratch.Key "nope"}}{{scratch.MapSet "m" "b" 2}}{{scratch.MapSet "m" "a" 1}} {{scratch.MapValues "m"}}`, "v false [1 2]"},
		{`{{define "x"}}[{{.}}]{{end}}{{executeTemplate "x" "y"}}`, "[y]"},
	} {
		if got := renderHelper(t, tc.tpl); got != tc.want {
			t.Errorf("%s\n got %q\nwant %q", tc.tpl, got, tc.want)
		}
	}
}

func TestByTag(t *testing.T) {
	svcs := []*HealthService{
		{ID: "a", Tags: ServiceTags{"x", "y"}},
		{ID: "b", Tags: ServiceTags{"y"}},
	}
	m, err := byTag(svcs)
	if err != nil || len(m["x"]) != 1 || len(m["y"]) != 2 {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := byTag("nope"); err == nil {
		t.Error("byTag accepted a string")
	}
}

// TestDependencyDiscovery checks the multi-pass evaluation directly: the
// first pass only knows it needs the catalog; once the catalog is in the
// brain the next pass asks for each service.
func TestDependencyDiscovery(t *testing.T) {
	b, err := os.ReadFile("testdata/service.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tmpl{contents: string(b)}
	br := newBrain()

	res, err := tp.execute(br, nil, releases[version])
	if err != nil {
		t.Fatal(err)
	}
	if got := depNames(res.missing); got != "catalog.services" {
		t.Fatalf("pass 1 missing %s", got)
	}

	cat, _ := newCatalogServicesQuery("")
	br.remember(cat, []*CatalogSnippet{{Name: "consul"}, {Name: "zhibo_service"}})
	res, err = tp.execute(br, nil, releases[version])
	if err != nil {
		t.Fatal(err)
	}
	if got := depNames(res.missing); got != "health.service(consul|passing) health.service(zhibo_service|passing)" {
		t.Fatalf("pass 2 missing %s", got)
	}
}

func depNames(s *depSet) string {
	var names []string
	for _, d := range s.list {
		names = append(names, d.String())
	}
	return strings.Join(names, " ")
}

// Ensure helper signatures work with text/template the same way as in the
// real tool, e.g. containsAny needs []interface{} needles.
func TestContainsAnyNeedsInterfaceSlice(t *testing.T) {
	tp := template.Must(template.New("").Funcs(template.FuncMap{"containsAny": containsSomeFunc(false, false)}).
		Parse(`{{containsAny .N .H}}`))
	err := tp.Execute(&bytes.Buffer{}, map[string]interface{}{"N": []string{"a"}, "H": []string{"a"}})
	if err == nil {
		t.Error("a []string needle list was accepted; consul-template v0.19.0 rejects it")
	}
}

// TestViewAcceptRules covers when an answer counts as new data.
func TestViewAcceptRules(t *testing.T) {
	var logBuf bytes.Buffer
	l, _ := newLogger(&logBuf, "warn")
	kv := &kvGetQuery{key: "k", block: true}
	v := &view{dep: kv, log: l}

	// Without X-Consul-Index the real tool never delivers data; the
	// stand-in does the same but says why.
	if v.accept("x", queryMeta{}) || !strings.Contains(logBuf.String(), "no valid X-Consul-Index") {
		t.Fatalf("accepted an answer without index; log %q", logBuf.String())
	}
	if v.accept(nil, queryMeta{index: 5, hasIndex: true}) {
		t.Fatal("`key` accepted a missing key")
	}
	if !v.accept("x", queryMeta{index: 6, hasIndex: true}) {
		t.Fatal("new value refused")
	}
	if v.accept("x", queryMeta{index: 7, hasIndex: true}) {
		t.Fatal("same value with a new index accepted")
	}
	if v.accept("y", queryMeta{index: 7, hasIndex: true}) {
		t.Fatal("answer with the same index accepted")
	}
	if v.accept("y", queryMeta{index: 3, hasIndex: true}) || v.lastIndex != 0 {
		t.Fatal("index going backwards must reset to 0 first")
	}
	if !v.accept("y", queryMeta{index: 3, hasIndex: true}) {
		t.Fatal("value after reset refused")
	}
}

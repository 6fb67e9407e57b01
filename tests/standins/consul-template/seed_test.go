package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/nginx.conf.golden")

// normalize keeps only the non-blank lines, each trimmed.
//
// The output published with the seed was trimmed by hand (indentation and
// most blank lines removed), whereas text/template - here as in the real
// consul-template - copies the template's whitespace verbatim, so a byte
// comparison with the seed's text cannot succeed. Comparing the trimmed,
// non-blank lines still checks every directive nginx reads, in order. The
// exact bytes are pinned separately by testdata/nginx.conf.golden.
func normalize(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fileContent(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func lineCount(path string) int {
	return strings.Count(fileContent(path), "\n")
}

// seedConsul registers the seed's catalog: the two Consul servers, and
// zhibo_service with the given instances. Instances are listed out of
// order on purpose: consul-template sorts them by node, then service id.
func seedConsul(f *fakeConsul, zhibo ...fakeInstance) {
	f.setService("consul", []string{},
		fakeInstance{Node: "node-b", NodeAddr: "192.168.56.3", ID: "consul", Addr: "192.168.56.3", Port: 8300},
		fakeInstance{Node: "node-a", NodeAddr: "192.168.56.2", ID: "consul", Addr: "192.168.56.2", Port: 8300},
	)
	f.setService("zhibo_service", []string{}, zhibo...)
}

// The three zhibo_service instances of the seed. They register without a
// service address, so the node address must be used.
var zhiboInstances = []fakeInstance{
	{Node: "node-c", NodeAddr: "192.168.56.4", ID: "zhibo_service-3", Port: 8080},
	{Node: "node-a", NodeAddr: "192.168.56.2", ID: "zhibo_service-1", Port: 8080},
	{Node: "node-b", NodeAddr: "192.168.56.3", ID: "zhibo_service-2", Port: 8080},
}

// TestSeedTemplate renders the seed's service.ctmpl in watch mode: first
// with zhibo_service registered but without instances (its upstream must
// be the "force a 502" server), then after the three instances start.
func TestSeedTemplate(t *testing.T) {
	f := newFakeConsul(t)
	seedConsul(f)

	dir := t.TempDir()
	dst := filepath.Join(dir, "nginx.conf")
	reloads := filepath.Join(dir, "reloads")
	spec := "testdata/service.ctmpl:" + dst + ":/bin/sh -c 'echo reload >> " + reloads + "'"
	p := start(t, "-consul-addr", "http://"+f.addr(), "-template", spec, "-log-level", "info")

	eventually(t, 5*time.Second, "first render", func() bool { return lineCount(reloads) == 1 })
	if got, want := normalize(readFile(t, dst)), normalize(readFile(t, "testdata/nginx.conf.no-instances.expected")); got != want {
		t.Fatalf("render without instances:\n%s\nwant:\n%s", got, want)
	}
	// Rendering waits until every dependency (catalog, then each service
	// found in it) has data, so there is no earlier partial render.
	time.Sleep(300 * time.Millisecond)
	if n := lineCount(reloads); n != 1 {
		t.Fatalf("command ran %d times before any change, want 1", n)
	}

	f.setService("zhibo_service", []string{}, zhiboInstances...)
	eventually(t, 5*time.Second, "re-render", func() bool { return lineCount(reloads) == 2 })
	got := readFile(t, dst)
	if n, w := normalize(got), normalize(readFile(t, "testdata/nginx.conf.expected")); n != w {
		t.Fatalf("render with 3 instances:\n%s\nwant (seed):\n%s", n, w)
	}

	golden := "testdata/nginx.conf.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, golden); got != want {
		t.Fatalf("exact render differs from %s:\n%q\nwant:\n%q", golden, got, want)
	}

	if !strings.Contains(p.stderr.String(), `[INFO] (runner) rendered "testdata/service.ctmpl" => "`+dst+`"`) {
		t.Errorf("missing render log line in:\n%s", p.stderr)
	}
	for _, uri := range f.requestLog() {
		if strings.HasPrefix(uri, "/v1/health/service/") && !strings.Contains(uri, "passing=1") {
			t.Errorf("default service query must ask Consul for passing instances only: %s", uri)
		}
	}
	if p.exited() {
		t.Fatalf("watch mode exited:\n%s", p.stderr)
	}
}

// TestSeedTemplateNoPassingInstance: instances that exist but are not
// healthy are filtered out by the default `service` query, so the upstream
// falls back to the "force a 502" server.
func TestSeedTemplateNoPassingInstance(t *testing.T) {
	f := newFakeConsul(t)
	sick := make([]fakeInstance, len(zhiboInstances))
	for i, in := range zhiboInstances {
		in.Checks = []string{"passing", "critical"}
		sick[i] = in
	}
	sick[0].Checks = []string{"warning"}
	seedConsul(f, sick...)

	dst := filepath.Join(t.TempDir(), "nginx.conf")
	p := start(t, "-once", "-consul-addr", f.addr(), "-template", "testdata/service.ctmpl:"+dst)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if got, want := normalize(readFile(t, dst)), normalize(readFile(t, "testdata/nginx.conf.no-instances.expected")); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

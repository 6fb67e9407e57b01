package main

// How the stand-in queries Consul and renders, the same in v0.19.0 and
// v0.19.5: stale reads, the token, ACL errors, empty renders.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthRequests are the request URIs of /v1/health/service/<name>.
func healthRequests(f *fakeConsul, name string) []string {
	var out []string
	for _, uri := range f.requestLog() {
		if strings.HasPrefix(uri, "/v1/health/service/"+name+"?") {
			out = append(out, uri)
		}
	}
	return out
}

func isStale(uri string) bool { return strings.Contains(uri, "stale=") }

// TestStaleByDefault pins config/config.go `DefaultMaxStale = 2 * time.Second`
// and watch/view.go fetch (`if v.maxStale != 0 { allowStale = true }`): every
// query carries ?stale unless -max-stale=0, and an answer within max_stale
// is used as it is.
func TestStaleByDefault(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		for _, tc := range []struct {
			flags     []string
			wantStale bool
		}{
			{nil, true},
			{[]string{"-max-stale=10s"}, true},
			{[]string{"-max-stale=0"}, false},
		} {
			f := newFakeConsul(t)
			f.setService("web", nil, webInstances(1)...)
			f.configure(func(f *fakeConsul) { f.lastContact = 2 * time.Second }) // not over 2s
			dir := t.TempDir()
			args := append([]string{"-once", "-consul-addr", f.addr(),
				"-template", writeTemplate(t, dir, webTemplate) + ":" + filepath.Join(dir, "out")}, tc.flags...)
			p := startAs(t, rel.version, args...)
			if code := p.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("%v: exit %d\n%s", tc.flags, code, p.stderr)
			}
			reqs := healthRequests(f, "web")
			if len(reqs) != 1 || isStale(reqs[0]) != tc.wantStale {
				t.Errorf("%v: requests %v, want one with stale=%v", tc.flags, reqs, tc.wantStale)
			}
		}
	})
}

// TestStaleFallback pins watch/view.go fetch:
//
//	if allowStale && rm.LastContact > v.maxStale {
//		allowStale = false
//		log.Printf("[TRACE] (view) %s stale data (last contact exceeded max_stale)", v.dependency)
//		continue
//	}
//
// An answer more than max_stale behind the leader (X-Consul-LastContact,
// in ms) is dropped and asked again at once without ?stale, with the same
// index; the next query is stale again. So with a lagging server every
// change costs two requests.
func TestStaleFallback(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		f := newFakeConsul(t)
		f.setService("web", nil, webInstances(1)...)
		f.configure(func(f *fakeConsul) { f.lastContact = 2001 * time.Millisecond })
		dir := t.TempDir()
		dst := filepath.Join(dir, "out")
		p := startAs(t, rel.version, "-log-level=trace", "-consul-addr", f.addr(),
			"-template", writeTemplate(t, dir, webTemplate)+":"+dst)
		eventually(t, 5*time.Second, "first render", func() bool { return fileContent(dst) == "10.0.0.1:8080\n" })
		f.setService("web", nil, webInstances(2)...)
		eventually(t, 5*time.Second, "second render", func() bool { return strings.Count(fileContent(dst), "\n") == 2 })
		eventually(t, 5*time.Second, "the next blocking query", func() bool { return len(healthRequests(f, "web")) >= 5 })

		reqs := healthRequests(f, "web")
		for i := 0; i+1 < 4; i += 2 {
			stale, consistent := reqs[i], reqs[i+1]
			if !isStale(stale) || isStale(consistent) || strings.Replace(stale, "stale=&", "", 1) != consistent {
				t.Fatalf("requests %d-%d are not a stale read and its consistent re-read:\n%s", i, i+1, strings.Join(reqs, "\n"))
			}
		}
		if !isStale(reqs[4]) {
			t.Errorf("the query after a consistent re-read is not stale again: %s", reqs[4])
		}
		if !strings.Contains(p.stderr.String(), "[TRACE] (view) health.service(web|passing) stale data (last contact exceeded max_stale)") {
			t.Errorf("no stale-data trace line:\n%s", p.stderr)
		}
	})
}

// TestEmptyRenderToMissingFile pins manager/renderer.go Render:
//
//	existing, err := ioutil.ReadFile(i.Path)   // nil when the file is missing
//	if bytes.Equal(existing, i.Contents) { return &RenderResult{DidRender: false, WouldRender: true} }
//
// bytes.Equal(nil, empty) is true: an empty render for a destination that
// does not exist writes nothing and runs no command; -once still finishes.
// An empty render over a file with content does write it and run it.
func TestEmptyRenderToMissingFile(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil) // no instances: webTemplate renders ""
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		src, dst, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out"), filepath.Join(dir, "runs")
		p := startAs(t, rel.version, "-once", "-log-level=info", "-consul-addr", f.addr(),
			"-template", src+":"+dst+":"+counterCommand(runs))
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Error("an empty render created the destination")
		}
		if lineCount(runs) != 0 || strings.Contains(p.stderr.String(), "(runner) rendered") {
			t.Errorf("an empty render ran the command or logged a render:\n%s", p.stderr)
		}

		if err := os.WriteFile(dst, []byte("old\n"), 0644); err != nil {
			t.Fatal(err)
		}
		p = startAs(t, rel.version, "-once", "-consul-addr", f.addr(), "-template", src+":"+dst+":"+counterCommand(runs))
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr)
		}
		if got := fileContent(dst); got != "" || lineCount(runs) != 1 {
			t.Errorf("empty render over %q: file %q, %d command runs", "old\n", got, lineCount(runs))
		}
	})
}

// TestMissingDestinationAtStart: consul-template keeps no state between
// runs, so a destination deleted before it starts is written by the first
// render, and the command runs, even though the content is what the last
// run rendered (manager/renderer.go Render compares with the file only).
func TestMissingDestinationAtStart(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(2)...)
	eachRelease(t, func(t *testing.T, rel release) {
		dir := t.TempDir()
		src, dst, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out"), filepath.Join(dir, "runs")
		for round := 1; round <= 2; round++ {
			p := startAs(t, rel.version, "-consul-addr", f.addr(), "-wait", "50ms:200ms",
				"-template", src+":"+dst+":"+counterCommand(runs))
			eventually(t, 5*time.Second, "render", func() bool { return lineCount(runs) == round })
			p.cli.signalCh <- syscall.SIGINT
			p.wait(t, 5*time.Second)
			if got := fileContent(dst); got != "10.0.0.1:8080\n10.0.0.2:8080\n" {
				t.Fatalf("round %d rendered %q", round, got)
			}
			if round == 1 {
				if err := os.Remove(dst); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// TestTokenHeader pins how both releases take and send the token:
// config/consul.go Finalize (`stringFromEnv([]string{"CONSUL_TOKEN",
// "CONSUL_HTTP_TOKEN"}, "")`, trimmed) when -consul-token is not given;
// dependency/client_set.go CreateConsulClient (start from the API's
// DefaultConfig, which reads CONSUL_HTTP_TOKEN untrimmed, override only with
// a non-empty token); the Consul API's newRequest (`X-Consul-Token` header,
// never ?token=). The token is not in the command's environment
// (manager/runner.go childEnv), and in the log only in the DEBUG final
// config line.
func TestTokenHeader(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	for _, tc := range []struct {
		name       string
		flags      []string
		env        map[string]string
		want       string
		childSeesT bool // the command's environment carries the token
	}{
		{"flag", []string{"-consul-token=s3cret-flag"}, map[string]string{"CONSUL_TOKEN": "", "CONSUL_HTTP_TOKEN": ""}, "s3cret-flag", false},
		{"flag over env", []string{"-consul-token=s3cret-flag"}, map[string]string{"CONSUL_TOKEN": "s3cret-env", "CONSUL_HTTP_TOKEN": "s3cret-http"}, "s3cret-flag", false},
		{"CONSUL_TOKEN first", nil, map[string]string{"CONSUL_TOKEN": " s3cret-env\n", "CONSUL_HTTP_TOKEN": "s3cret-http"}, "s3cret-env", false},
		{"CONSUL_HTTP_TOKEN", nil, map[string]string{"CONSUL_TOKEN": "", "CONSUL_HTTP_TOKEN": "s3cret-http"}, "s3cret-http", true},
		{"empty flag", []string{"-consul-token="}, map[string]string{"CONSUL_TOKEN": "s3cret-env", "CONSUL_HTTP_TOKEN": "s3cret-http"}, "s3cret-http", true},
		{"none", nil, map[string]string{"CONSUL_TOKEN": "", "CONSUL_HTTP_TOKEN": ""}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			dir := t.TempDir()
			dst, envFile := filepath.Join(dir, "out"), filepath.Join(dir, "env")
			before := len(f.requestLog())
			args := append([]string{"-once", "-log-level=trace", "-consul-addr", f.addr(), "-template",
				writeTemplate(t, dir, webTemplate+`{{env "CONSUL_HTTP_TOKEN"}}`) + ":" + dst + ":/bin/sh -c 'env > " + envFile + "'"}, tc.flags...)
			p := start(t, args...)
			if code := p.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("exit %d\n%s", code, p.stderr)
			}
			for i, uri := range f.requestLog()[before:] {
				if got := f.tokenLog()[before+i]; got != tc.want || strings.Contains(uri, "token") {
					t.Errorf("request %s sent token %q, want %q in the header only", uri, got, tc.want)
				}
			}
			childSees := tc.want != "" && strings.Contains(fileContent(envFile), "CONSUL_HTTP_TOKEN="+tc.want)
			if childSees != tc.childSeesT {
				t.Errorf("the command sees the token: %v, want %v", childSees, tc.childSeesT)
			}
			if strings.Contains(fileContent(dst), "s3cret-flag") {
				t.Errorf("{{env \"CONSUL_HTTP_TOKEN\"}} gave the -consul-token value")
			}
			// manager/runner.go init logs json.Marshal(r.config) at DEBUG,
			// Consul.Token included: at trace that line, and only it, holds
			// the token (TestTokenLoggedAtDebugAndTrace).
			for _, line := range strings.Split(p.stderr.String(), "\n") {
				if tc.want != "" && strings.Contains(line, tc.want) && !strings.Contains(line, "[DEBUG] (runner) final config: ") {
					t.Errorf("the token is in a log line other than the final config: %s", line)
				}
			}
			if got := loggedToken(t, p.stderr.String()); got != tc.want {
				t.Errorf("final config's Consul.Token %q, want %q", got, tc.want)
			}
		})
	}
}

// loggedToken is Consul.Token of the "(runner) final config" line in a log.
func loggedToken(t *testing.T, log string) string {
	t.Helper()
	const marker = "[DEBUG] (runner) final config: "
	start := strings.Index(log, marker)
	if start < 0 {
		t.Fatalf("no final config line:\n%s", log)
	}
	line := log[start+len(marker):]
	line = line[:strings.IndexByte(line, '\n')]
	var final struct{ Consul struct{ Token *string } }
	if err := json.Unmarshal([]byte(line), &final); err != nil || final.Consul.Token == nil {
		t.Fatalf("final config is not the real JSON with Consul.Token (%v): %s", err, line)
	}
	return *final.Consul.Token
}

// TestTokenLoggedAtDebugAndTrace pins why the lab refuses lb_log_level debug
// and trace with ACLs on (roles/lb.py): both releases print the whole
// configuration as JSON at DEBUG, before any query, the Consul token in
// clear text included (v0.19.5 manager/runner.go lines 816-821, v0.19.0
// lines 749-754; config/consul.go `Token *string`, no json tag), and log
// nothing with the token at info and above.
func TestTokenLoggedAtDebugAndTrace(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		f := newFakeConsul(t)
		f.setService("web", nil, webInstances(1)...)
		for _, level := range []string{"trace", "debug", "info", "warn", "err"} {
			dir := t.TempDir()
			t.Setenv("CONSUL_HTTP_TOKEN", "s3cret-from-env")
			p := startAs(t, rel.version, "-once", "-log-level="+level, "-consul-addr", f.addr(),
				"-template", writeTemplate(t, dir, webTemplate)+":"+filepath.Join(dir, "out"))
			if code := p.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("%s: exit %d\n%s", level, code, p.stderr)
			}
			shown := strings.Contains(p.stderr.String(), `"Token":"s3cret-from-env"`)
			if want := level == "trace" || level == "debug"; shown != want {
				t.Errorf("-log-level=%s: token in the log %v, want %v\n%s", level, shown, want, p.stderr)
			}
			if level != "trace" && level != "debug" && strings.Contains(p.stderr.String(), "s3cret-from-env") {
				t.Errorf("-log-level=%s: the token is in the log:\n%s", level, p.stderr)
			}
		}
	})
}

// TestACLDenied: Consul answers 403 ("ACL not found" for an unknown token,
// "Permission denied" for a denied read). Both releases treat it like any
// other error (the Consul API's requireOK: `Unexpected response code: %d
// (%s)`; watch/view.go poll retries it with the backoff): WARN retry lines,
// the file untouched, and after -consul-retry-attempts `(exceeded maximum
// retries)` and exit 14. Once the token is accepted, the view renders.
func TestACLDenied(t *testing.T) {
	eachRelease(t, func(t *testing.T, rel release) {
		f := newFakeConsul(t)
		f.setService("web", nil, webInstances(1)...)
		f.configure(func(f *fakeConsul) { f.denyStatus, f.denyBody = 403, "ACL not found" })
		dir := t.TempDir()
		src, dst := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out")
		if err := os.WriteFile(dst, []byte("last good\n"), 0644); err != nil {
			t.Fatal(err)
		}
		p := startAs(t, rel.version, "-consul-addr", f.addr(), "-consul-token=wrong-token",
			"-consul-retry-attempts=2", "-consul-retry-backoff=10ms", "-template", src+":"+dst)
		if code := p.wait(t, 5*time.Second); code != exitCodeRunnerError {
			t.Fatalf("exit %d\n%s", code, p.stderr)
		}
		stderr := p.stderr.String()
		for _, want := range []string{
			`[WARN] (view) health.service(web|passing): Unexpected response code: 403 (ACL not found) (retry attempt 1 after "10ms")`,
			`[WARN] (view) health.service(web|passing): Unexpected response code: 403 (ACL not found) (retry attempt 2 after "20ms")`,
			`[ERR] (view) health.service(web|passing): Unexpected response code: 403 (ACL not found) (exceeded maximum retries)`,
			`[ERR] (cli) health.service(web|passing): Unexpected response code: 403 (ACL not found)`,
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if strings.Contains(stderr, "wrong-token") || fileContent(dst) != "last good\n" {
			t.Errorf("token logged or file touched:\n%s", stderr)
		}

		p = startAs(t, rel.version, "-consul-addr", f.addr(), "-consul-retry-attempts=0",
			"-consul-retry-backoff=10ms", "-template", src+":"+dst)
		eventually(t, 5*time.Second, "a retry", func() bool { return strings.Contains(p.stderr.String(), "403 (ACL not found) (retry attempt 2") })
		f.configure(func(f *fakeConsul) { f.denyStatus = 0 })
		eventually(t, 5*time.Second, "render after the ACL is fixed", func() bool { return fileContent(dst) == "10.0.0.1:8080\n" })
	})
}

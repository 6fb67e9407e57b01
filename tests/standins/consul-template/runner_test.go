package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// webTemplate lists the passing "web" instances, one per line.
const webTemplate = `{{range service "web"}}{{.Address}}:{{.Port}}
{{end}}`

func writeTemplate(t *testing.T, dir, contents string) string {
	t.Helper()
	path := filepath.Join(dir, "in.ctmpl")
	if err := os.WriteFile(path, []byte(contents), 0644); err != nil {
		t.Fatal(err)
	}
	return path
}

func webInstances(n int) []fakeInstance {
	var out []fakeInstance
	for i := 1; i <= n; i++ {
		out = append(out, fakeInstance{
			Node: fmt.Sprintf("node-%02d", i), NodeAddr: fmt.Sprintf("10.0.0.%d", i),
			ID: fmt.Sprintf("web-%d", i), Port: 8080,
		})
	}
	return out
}

// counterCommand appends a line to path each time it runs.
func counterCommand(path string) string {
	return "/bin/sh -c 'echo run >> " + path + "'"
}

// TestQuiescence: with -wait min:max, a burst of changes that arrive less
// than `min` apart is coalesced into ONE render and one command run, with
// the data of the last change.
func TestQuiescence(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	src, dst, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out"), filepath.Join(dir, "runs")

	start(t, "-consul-addr", f.addr(), "-wait", "400ms:5s",
		"-template", src+":"+dst+":"+counterCommand(runs))

	// The first render also waits for quiescence (as in the real tool).
	eventually(t, 5*time.Second, "first render", func() bool { return lineCount(runs) == 1 })

	began := time.Now()
	for n := 2; n <= 6; n++ {
		f.setService("web", nil, webInstances(n)...)
		time.Sleep(60 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "coalesced render", func() bool { return lineCount(runs) == 2 })
	if took := time.Since(began); took < 400*time.Millisecond {
		t.Errorf("rendered after %s, before the 400ms quiet period", took)
	}
	time.Sleep(700 * time.Millisecond)
	if n := lineCount(runs); n != 2 {
		t.Fatalf("command ran %d times, want 2 (initial + one for the burst)", n)
	}
	if got := strings.Count(fileContent(dst), ":8080"); got != 6 {
		t.Fatalf("final render has %d instances, want 6 (the last change):\n%s", got, fileContent(dst))
	}
}

// TestQuiescenceMax: a dependency that never settles (a flapping check)
// still renders once `max` has passed since the first change.
func TestQuiescenceMax(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	src, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "runs")

	start(t, "-consul-addr", f.addr(), "-wait", "300ms:1s",
		"-template", src+":"+filepath.Join(dir, "out")+":"+counterCommand(runs))
	eventually(t, 5*time.Second, "first render", func() bool { return lineCount(runs) == 1 })

	// Change every 100ms for 2.5s: never quiet for 300ms. Every change is
	// new data (if the render at `max` happened to equal the file on disk,
	// nothing would be written and no command run).
	began := time.Now()
	var renderedAt time.Duration
	for i := 0; time.Since(began) < 2500*time.Millisecond; i++ {
		f.setService("web", nil, webInstances(2+i)...)
		if renderedAt == 0 && lineCount(runs) >= 2 {
			renderedAt = time.Since(began)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if renderedAt == 0 {
		t.Fatal("no render while flapping: -wait max was not honoured")
	}
	if renderedAt < 900*time.Millisecond || renderedAt > 1800*time.Millisecond {
		t.Errorf("rendered %s after flapping began, want about 1s (max)", renderedAt)
	}
	if n := lineCount(runs); n > 4 {
		t.Errorf("%d renders in 2.5s of flapping with max=1s", n)
	}
}

// TestNoWaitRendersEachChange is the control for the quiescence tests:
// without -wait each change is rendered and the command runs again.
func TestNoWaitRendersEachChange(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	src, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "runs")

	start(t, "-consul-addr", f.addr(), "-template", src+":"+filepath.Join(dir, "out")+":"+counterCommand(runs))
	eventually(t, 5*time.Second, "first render", func() bool { return lineCount(runs) == 1 })
	for n := 2; n <= 4; n++ {
		f.setService("web", nil, webInstances(n)...)
		want := n
		eventually(t, 5*time.Second, "render per change", func() bool { return lineCount(runs) == want })
	}
}

// TestCommandFailureExits: a template command that exits non-zero makes
// consul-template log the error and exit with the runner-error status 14.
func TestCommandFailureExits(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(2)...)

	for _, tc := range []struct {
		name, command string
		wantExit      int
	}{
		{"false", "false", exitCodeRunnerError},
		// Real v0.19 runs commands without a shell and stops parsing at the
		// first ||, so the guard is silently lost and the failure stands.
		{"unwrapped guard", "false || true", exitCodeRunnerError},
		{"missing binary", "/nonexistent/reload", exitCodeRunnerError},
		// The documented guard: run the shell explicitly.
		{"shell guard", "/bin/sh -c 'false || true'", exitCodeOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out")
			p := start(t, "-once", "-consul-addr", f.addr(), "-template", src+":"+dst+":"+tc.command)
			code := p.wait(t, 10*time.Second)
			if code != tc.wantExit {
				t.Fatalf("exit %d, want %d\n%s", code, tc.wantExit, p.stderr)
			}
			if fileContent(dst) == "" {
				t.Error("the file must be rendered before the command runs")
			}
			if tc.wantExit == exitCodeOK {
				return
			}
			stderr := p.stderr.String()
			want := fmt.Sprintf(`[ERR] (cli) 1 error occurred:

* failed to execute command %q from %q => %q: child: `, tc.command, src, dst)
			if !strings.Contains(stderr, want) {
				t.Fatalf("stderr lacks %q:\n%s", want, stderr)
			}
		})
	}
}

// TestCommandFailureInWatchMode: in daemon mode too, the first failing
// reload ends the process.
func TestCommandFailureInWatchMode(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	src, dst, flag := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out"), filepath.Join(dir, "fail")
	// Succeeds until the flag file exists.
	cmd := "/bin/sh -c 'test ! -e " + flag + "'"
	p := start(t, "-consul-addr", f.addr(), "-template", src+":"+dst+":"+cmd)
	eventually(t, 5*time.Second, "first render", func() bool { return fileContent(dst) != "" })
	time.Sleep(100 * time.Millisecond)
	if p.exited() {
		t.Fatalf("exited after a successful command:\n%s", p.stderr)
	}
	if err := os.WriteFile(flag, nil, 0644); err != nil {
		t.Fatal(err)
	}
	f.setService("web", nil, webInstances(2)...)
	if code := p.wait(t, 5*time.Second); code != exitCodeRunnerError {
		t.Fatalf("exit %d, want %d", code, exitCodeRunnerError)
	}
	if !strings.Contains(p.stderr.String(), "command exited with a non-zero exit status") {
		t.Fatalf("stderr:\n%s", p.stderr)
	}
}

// TestCommandTimeout: a command still running after the timeout is killed
// and treated as a failure.
func TestCommandTimeout(t *testing.T) {
	c := &commandRunner{timeout: 200 * time.Millisecond, log: testLogger{t}}
	began := time.Now()
	err := c.run("sleep 5")
	if err == nil || !strings.Contains(err.Error(), `did not exit within "200ms"`) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(began) > 2*time.Second {
		t.Fatal("command was not killed at the timeout")
	}
}

type testLogger struct{ t *testing.T }

func (l testLogger) Printf(format string, args ...interface{}) { l.t.Logf(format, args...) }

// TestRetryUntilConsulComesUp: while Consul is unreachable the stand-in
// retries with backoff and leaves the existing file alone; once Consul
// answers it renders.
func TestRetryUntilConsulComesUp(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	src, dst, runs := writeTemplate(t, dir, webTemplate), filepath.Join(dir, "out"), filepath.Join(dir, "runs")
	if err := os.WriteFile(dst, []byte("last good config\n"), 0644); err != nil {
		t.Fatal(err)
	}

	p := start(t, "-once", "-consul-addr", addr,
		"-consul-retry-attempts", "0", "-consul-retry-backoff", "20ms", "-consul-retry-max-backoff", "100ms",
		"-template", src+":"+dst+":"+counterCommand(runs))

	eventually(t, 5*time.Second, "retries", func() bool {
		return strings.Count(p.stderr.String(), "(retry attempt") >= 4
	})
	if got := fileContent(dst); got != "last good config\n" {
		t.Fatalf("file touched while Consul was down: %q", got)
	}
	if p.exited() {
		t.Fatalf("gave up despite -consul-retry-attempts=0:\n%s", p.stderr)
	}
	stderr := p.stderr.String()
	if !strings.Contains(stderr, `[WARN] (view) catalog.services`) && !strings.Contains(stderr, `[WARN] (view) health.service(web|passing)`) {
		t.Errorf("unexpected retry log:\n%s", stderr)
	}

	// Consul comes up on that address.
	f := newUnstartedFakeConsul(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address %s was taken meanwhile: %v", addr, err)
	}
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	f.setService("web", nil, webInstances(2)...)

	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if got := fileContent(dst); got != "10.0.0.1:8080\n10.0.0.2:8080\n" {
		t.Fatalf("rendered %q", got)
	}
	if n := lineCount(runs); n != 1 {
		t.Fatalf("command ran %d times", n)
	}
}

// TestRetryExhausted: after -consul-retry-attempts failed retries the
// process gives up with the runner-error status; the file is untouched.
func TestRetryExhausted(t *testing.T) {
	dir := t.TempDir()
	src, dst := writeTemplate(t, dir, `{{range services}}{{.Name}}{{end}}`), filepath.Join(dir, "out")
	if err := os.WriteFile(dst, []byte("keep"), 0644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "-consul-addr", freeAddr(t), "-consul-retry-attempts", "3",
		"-consul-retry-backoff", "10ms", "-template", src+":"+dst)
	if code := p.wait(t, 10*time.Second); code != exitCodeRunnerError {
		t.Fatalf("exit %d, want %d\n%s", code, exitCodeRunnerError, p.stderr)
	}
	stderr := p.stderr.String()
	for i := 1; i <= 3; i++ {
		if !strings.Contains(stderr, fmt.Sprintf("(retry attempt %d after \"%s\")", i, 10*time.Millisecond<<(i-1))) {
			t.Errorf("no retry attempt %d with exponential backoff in:\n%s", i, stderr)
		}
	}
	if strings.Contains(stderr, "retry attempt 4") {
		t.Errorf("retried more than 3 times:\n%s", stderr)
	}
	for _, want := range []string{"(exceeded maximum retries)", "[ERR] (cli) catalog.services: Get"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if got := fileContent(dst); got != "keep" {
		t.Fatalf("file changed to %q", got)
	}
}

// TestRetryDisabled: -consul-retry=false gives up at the first error.
func TestRetryDisabled(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "-consul-addr", freeAddr(t), "-consul-retry=false",
		"-template", writeTemplate(t, dir, `{{range services}}{{end}}`)+":"+filepath.Join(dir, "out"))
	if code := p.wait(t, 5*time.Second); code != exitCodeRunnerError {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "retry attempt") {
		t.Fatalf("retried:\n%s", p.stderr)
	}
}

// TestTagFilter: "tag.name" asks Consul for instances carrying the tag.
func TestTagFilter(t *testing.T) {
	f := newFakeConsul(t)
	in := webInstances(3)
	in[0].Tags = []string{"primary", "v1"}
	in[2].Tags = []string{"primary"}
	in[1].Tags = []string{"canary"}
	f.setService("web", []string{"primary", "canary", "v1"}, in...)

	dir := t.TempDir()
	tpl := `{{range service "primary.web"}}{{.ID}} {{.Tags}}
{{end}}--
{{range service "canary.web"}}{{.ID}}{{end}}
{{range $tag, $s := service "web" | byTag}}{{$tag}}={{len $s}} {{end}}`
	dst := filepath.Join(dir, "out")
	p := start(t, "-once", "-consul-addr", f.addr(), "-template", writeTemplate(t, dir, tpl)+":"+dst)
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	want := "web-1 [primary v1]\nweb-3 [primary]\n--\nweb-2\ncanary=1 primary=2 v1=1 "
	if got := fileContent(dst); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var sawTag bool
	for _, uri := range f.requestLog() {
		if strings.HasPrefix(uri, "/v1/health/service/web?") && strings.Contains(uri, "tag=primary") {
			sawTag = true
		}
	}
	if !sawTag {
		t.Fatalf("no ?tag=primary query in %v", f.requestLog())
	}
}

// TestHealthFilters: the default is passing only; "|any" (or a second
// argument "any") returns every instance with its aggregated status, and
// other filters are applied client side. Results are sorted by node then
// id, and an empty service address falls back to the node address.
func TestHealthFilters(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil,
		fakeInstance{Node: "b", NodeAddr: "10.0.0.2", ID: "web-b2", Port: 2, Checks: []string{"critical"}},
		fakeInstance{Node: "b", NodeAddr: "10.0.0.2", ID: "web-b1", Port: 1, Addr: "172.16.0.1"},
		fakeInstance{Node: "a", NodeAddr: "10.0.0.1", ID: "web-a", Port: 3, Checks: []string{"passing", "warning"}},
		fakeInstance{Node: "c", NodeAddr: "10.0.0.3", ID: "web-c", Port: 4,
			Checks: []string{"passing", "critical"}, CheckIDs: []string{"serfHealth", "_node_maintenance"}},
	)
	dir := t.TempDir()
	tpl := `{{define "list"}}{{range .}}{{.Node}}/{{.ID}}/{{.Status}}/{{.Address}}:{{.Port}} {{end}}{{end}}` +
		`default: {{executeTemplate "list" (service "web")}}
any: {{executeTemplate "list" (service "web|any")}}
any2: {{executeTemplate "list" (service "web" "any")}}
warn+crit: {{executeTemplate "list" (service "web|warning,critical")}}
maint: {{executeTemplate "list" (service "web|maintenance")}}
`
	dst := filepath.Join(dir, "out")
	p := start(t, "-once", "-consul-addr", f.addr(), "-template", writeTemplate(t, dir, tpl)+":"+dst)
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	want := `default: b/web-b1/passing/172.16.0.1:1 
any: a/web-a/warning/10.0.0.1:3 b/web-b1/passing/172.16.0.1:1 b/web-b2/critical/10.0.0.2:2 c/web-c/maintenance/10.0.0.3:4 
any2: a/web-a/warning/10.0.0.1:3 b/web-b1/passing/172.16.0.1:1 b/web-b2/critical/10.0.0.2:2 c/web-c/maintenance/10.0.0.3:4 
warn+crit: a/web-a/warning/10.0.0.1:3 b/web-b2/critical/10.0.0.2:2 
maint: c/web-c/maintenance/10.0.0.3:4 
`
	if got := fileContent(dst); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestKeyBlocksKeyOrDefaultDoesNot: `key` waits for the key to exist,
// `keyOrDefault` renders the default straight away.
func TestKeyBlocksKeyOrDefaultDoesNot(t *testing.T) {
	f := newFakeConsul(t)
	dir := t.TempDir()

	defDst := filepath.Join(dir, "default.out")
	srcDef := filepath.Join(dir, "default.ctmpl")
	if err := os.WriteFile(srcDef, []byte(`max_conns={{keyOrDefault "app/max_conns" "100"}}`), 0644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "-once", "-consul-addr", f.addr(), "-template", srcDef+":"+defDst)
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if got := fileContent(defDst); got != "max_conns=100" {
		t.Fatalf("keyOrDefault rendered %q", got)
	}

	keyDst := filepath.Join(dir, "key.out")
	p = start(t, "-once", "-consul-addr", f.addr(),
		"-template", writeTemplate(t, dir, `max_conns={{key "app/max_conns"}}`)+":"+keyDst)
	time.Sleep(400 * time.Millisecond)
	if p.exited() || fileContent(keyDst) != "" {
		t.Fatalf("key rendered before the key existed (exited=%v, %q)", p.exited(), fileContent(keyDst))
	}
	f.setKey("app/max_conns", "250")
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if got := fileContent(keyDst); got != "max_conns=250" {
		t.Fatalf("key rendered %q", got)
	}
}

// TestDryRun: -dry prints "> dst" and the contents, writes nothing and
// runs no command.
func TestDryRun(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	dst, runs := filepath.Join(dir, "out"), filepath.Join(dir, "runs")
	p := start(t, "-dry", "-once", "-consul-addr", f.addr(),
		"-template", writeTemplate(t, dir, webTemplate)+":"+dst+":"+counterCommand(runs))
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if got, want := p.stdout.String(), "> "+dst+"\n10.0.0.1:8080\n"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatal("-dry wrote the destination")
	}
	if _, err := os.Stat(runs); !os.IsNotExist(err) {
		t.Fatal("-dry ran the command")
	}
}

// TestUnchangedFileRunsNoCommand: when the destination already holds the
// rendered bytes nothing is written and the command is not run, even on
// start-up.
func TestUnchangedFileRunsNoCommand(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)
	dir := t.TempDir()
	dst, runs := filepath.Join(dir, "out"), filepath.Join(dir, "runs")
	if err := os.WriteFile(dst, []byte("10.0.0.1:8080\n"), 0600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(dst)
	p := start(t, "-once", "-consul-addr", f.addr(),
		"-template", writeTemplate(t, dir, webTemplate)+":"+dst+":"+counterCommand(runs))
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if _, err := os.Stat(runs); !os.IsNotExist(err) {
		t.Fatal("command ran although the file was unchanged")
	}
	after, _ := os.Stat(dst)
	if !os.SameFile(before, after) || after.Mode().Perm() != 0600 {
		t.Fatal("unchanged file was rewritten")
	}
}

// TestAtomicWrite: a changed file is replaced by rename (new inode), and no
// temporary file is left behind.
func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "sub", "out")
	if err := atomicWrite(dst, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(dst)
	res, err := render(dst, []byte("two"), false, false, nil)
	if err != nil || !res.didRender {
		t.Fatalf("render: %+v %v", res, err)
	}
	after, _ := os.Stat(dst)
	if os.SameFile(before, after) {
		t.Error("file was rewritten in place, not renamed over")
	}
	entries, _ := os.ReadDir(filepath.Dir(dst))
	if len(entries) != 1 {
		t.Errorf("leftover files: %v", entries)
	}
}

// TestSignals: the kill signal (SIGINT by default) stops with status 12;
// SIGTERM is ignored unless chosen with -kill-signal; SIGHUP re-reads the
// templates.
func TestSignals(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("web", nil, webInstances(1)...)

	t.Run("SIGINT", func(t *testing.T) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out")
		p := start(t, "-consul-addr", f.addr(), "-template", writeTemplate(t, dir, webTemplate)+":"+dst)
		eventually(t, 5*time.Second, "render", func() bool { return fileContent(dst) != "" })
		p.cli.signalCh <- syscall.SIGTERM
		time.Sleep(200 * time.Millisecond)
		if p.exited() {
			t.Fatal("SIGTERM stopped the process; v0.19.0 ignores it unless -kill-signal=SIGTERM")
		}
		p.cli.signalCh <- syscall.SIGINT
		if code := p.wait(t, 5*time.Second); code != exitCodeInterrupt {
			t.Fatalf("exit %d, want %d", code, exitCodeInterrupt)
		}
		if !strings.Contains(p.stderr.String(), "Cleaning up...") {
			t.Errorf("stderr:\n%s", p.stderr)
		}
	})

	t.Run("kill-signal=SIGTERM", func(t *testing.T) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "out")
		p := start(t, "-kill-signal=SIGTERM", "-consul-addr", f.addr(), "-template", writeTemplate(t, dir, webTemplate)+":"+dst)
		eventually(t, 5*time.Second, "render", func() bool { return fileContent(dst) != "" })
		p.cli.signalCh <- syscall.SIGTERM
		if code := p.wait(t, 5*time.Second); code != exitCodeInterrupt {
			t.Fatalf("exit %d, want %d", code, exitCodeInterrupt)
		}
	})

	t.Run("SIGHUP", func(t *testing.T) {
		dir := t.TempDir()
		dst, runs := filepath.Join(dir, "out"), filepath.Join(dir, "runs")
		src := writeTemplate(t, dir, webTemplate)
		p := start(t, "-consul-addr", f.addr(), "-template", src+":"+dst+":"+counterCommand(runs))
		eventually(t, 5*time.Second, "render", func() bool { return lineCount(runs) == 1 })

		// A reload with unchanged templates rewrites nothing.
		p.cli.signalCh <- syscall.SIGHUP
		time.Sleep(300 * time.Millisecond)
		if n := lineCount(runs); n != 1 {
			t.Fatalf("reload without changes ran the command again (%d runs)", n)
		}

		if err := os.WriteFile(src, []byte(`{{range service "web"}}server {{.Address}}:{{.Port}};{{end}}`), 0644); err != nil {
			t.Fatal(err)
		}
		p.cli.signalCh <- syscall.SIGHUP
		eventually(t, 5*time.Second, "re-render", func() bool { return fileContent(dst) == "server 10.0.0.1:8080;" })
		if n := lineCount(runs); n != 2 {
			t.Fatalf("%d command runs, want 2", n)
		}
		if !strings.Contains(p.stderr.String(), "Reloading configuration...") || p.exited() {
			t.Fatalf("stderr:\n%s", p.stderr)
		}
	})
}

// TestServicesFollowCatalog: services appearing in and disappearing from
// the catalog are picked up, and the watches of vanished ones dropped.
func TestServicesFollowCatalog(t *testing.T) {
	f := newFakeConsul(t)
	f.setService("a", nil, fakeInstance{Node: "n", NodeAddr: "10.1.0.1", ID: "a", Port: 1})
	dir := t.TempDir()
	dst := filepath.Join(dir, "out")
	tpl := `{{range services}}{{.Name}}:{{range service .Name}}{{.Port}}{{end}};{{end}}`
	start(t, "-consul-addr", f.addr(), "-template", writeTemplate(t, dir, tpl)+":"+dst, "-log-level=debug")
	eventually(t, 5*time.Second, "render", func() bool { return fileContent(dst) == "a:1;" })

	f.setService("b", nil, fakeInstance{Node: "n", NodeAddr: "10.1.0.1", ID: "b", Port: 2})
	eventually(t, 5*time.Second, "new service", func() bool { return fileContent(dst) == "a:1;b:2;" })

	f.update(func(f *fakeConsul) { delete(f.catalog, "a") })
	eventually(t, 5*time.Second, "removed service", func() bool { return fileContent(dst) == "b:2;" })
}

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeInstance is one registered service instance of the fake Consul.
type fakeInstance struct {
	Node     string
	NodeAddr string
	ID       string
	Service  string
	Addr     string // empty: Consul returns "" and clients use NodeAddr
	Port     int
	Tags     []string
	Checks   []string // check statuses; "passing" if empty
	CheckIDs []string // optional ids matching Checks
}

// fakeConsul is a loopback-only Consul HTTP API with real blocking-query
// semantics: a request carrying ?index=N with N >= the current index is
// held until the state changes or its wait= expires. One global index is
// used for every endpoint, so unrelated changes also wake every watcher
// (with unchanged data), which exercises the "contents were the same" path.
type fakeConsul struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	index     uint64
	changed   chan struct{}
	catalog   map[string][]string
	instances []fakeInstance
	kv        map[string]string
	requests  []string
	tokens    []string // X-Consul-Token of each request

	// lastContact is sent as X-Consul-LastContact (milliseconds) on stale
	// reads; consistent reads always get 0, as from the leader.
	lastContact time.Duration
	// denyStatus, when set, answers every request with it and denyBody (an
	// ACL error is 403 "ACL not found" / "Permission denied").
	denyStatus int
	denyBody   string
}

func newFakeConsul(t *testing.T) *fakeConsul {
	t.Helper()
	f := newUnstartedFakeConsul(t)
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

// newUnstartedFakeConsul lets a test choose the listener (to appear on an
// address the stand-in is already retrying).
func newUnstartedFakeConsul(t *testing.T) *fakeConsul {
	f := &fakeConsul{
		t:       t,
		index:   10,
		changed: make(chan struct{}),
		catalog: map[string][]string{},
		kv:      map[string]string{},
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	return f
}

func (f *fakeConsul) addr() string { return f.srv.Listener.Addr().String() }

// update mutates the state and wakes blocked queries.
func (f *fakeConsul) update(fn func(f *fakeConsul)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// setService registers name in the catalog with exactly these instances.
func (f *fakeConsul) setService(name string, tags []string, instances ...fakeInstance) {
	f.update(func(f *fakeConsul) {
		f.catalog[name] = tags
		kept := f.instances[:0:0]
		for _, in := range f.instances {
			if in.Service != name {
				kept = append(kept, in)
			}
		}
		for _, in := range instances {
			in.Service = name
			kept = append(kept, in)
		}
		f.instances = kept
	})
}

func (f *fakeConsul) setKey(key, value string) {
	f.update(func(f *fakeConsul) { f.kv[key] = value })
}

func (f *fakeConsul) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeConsul) tokenLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// configure changes how the fake answers, without waking blocked queries.
func (f *fakeConsul) configure(fn func(f *fakeConsul)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeConsul) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()

	f.mu.Lock()
	f.requests = append(f.requests, r.URL.RequestURI())
	f.tokens = append(f.tokens, r.Header.Get("X-Consul-Token"))
	index, changed := f.index, f.changed
	denyStatus, denyBody := f.denyStatus, f.denyBody
	f.mu.Unlock()

	if denyStatus != 0 {
		w.WriteHeader(denyStatus)
		_, _ = w.Write([]byte(denyBody))
		return
	}

	if want, err := strconv.ParseUint(q.Get("index"), 10, 64); err == nil && want >= index {
		wait, err := time.ParseDuration(q.Get("wait"))
		if err != nil || wait <= 0 {
			wait = 5 * time.Minute
		}
		timer := time.NewTimer(wait)
		select {
		case <-changed:
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	lastContact := time.Duration(0)
	if _, stale := q["stale"]; stale {
		lastContact = f.lastContact
	}
	w.Header().Set("X-Consul-LastContact", strconv.FormatInt(int64(lastContact/time.Millisecond), 10))
	w.Header().Set("Content-Type", "application/json")

	switch {
	case r.URL.Path == "/v1/catalog/services":
		writeJSON(w, f.catalog)
	case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
		name := strings.TrimPrefix(r.URL.Path, "/v1/health/service/")
		_, passingOnly := q["passing"]
		writeJSON(w, f.healthEntries(name, q.Get("tag"), passingOnly))
	case strings.HasPrefix(r.URL.Path, "/v1/kv/"):
		key := strings.TrimPrefix(r.URL.Path, "/v1/kv/")
		v, ok := f.kv[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeJSON(w, []map[string]interface{}{{
			"Key": key, "Value": base64.StdEncoding.EncodeToString([]byte(v)),
			"Flags": 0, "CreateIndex": 1, "ModifyIndex": f.index,
		}})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeConsul) healthEntries(name, tag string, passingOnly bool) []map[string]interface{} {
	out := []map[string]interface{}{}
	for _, in := range f.instances {
		if in.Service != name || (tag != "" && !containsString(in.Tags, tag)) {
			continue
		}
		statuses := in.Checks
		if len(statuses) == 0 {
			statuses = []string{"passing"}
		}
		allPassing := true
		checks := []map[string]interface{}{}
		for i, s := range statuses {
			id := "service:" + in.ID
			if i < len(in.CheckIDs) {
				id = in.CheckIDs[i]
			}
			checks = append(checks, map[string]interface{}{
				"Node": in.Node, "CheckID": id, "Name": "check " + id, "Status": s,
				"ServiceID": in.ID, "ServiceName": name,
			})
			if s != "passing" {
				allPassing = false
			}
		}
		if passingOnly && !allPassing {
			continue
		}
		tags := in.Tags
		if tags == nil {
			tags = []string{}
		}
		out = append(out, map[string]interface{}{
			"Node": map[string]interface{}{
				"ID": "id-" + in.Node, "Node": in.Node, "Address": in.NodeAddr, "Datacenter": "dc1",
				"TaggedAddresses": map[string]string{"lan": in.NodeAddr}, "Meta": map[string]string{},
			},
			"Service": map[string]interface{}{
				"ID": in.ID, "Service": name, "Tags": tags, "Address": in.Addr, "Port": in.Port,
				"Meta": map[string]string{},
			},
			"Checks": checks,
		})
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	b, _ := json.Marshal(v)
	_, _ = w.Write(b)
}

// freeAddr returns a loopback address nothing listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a stand-in process run in-process by a test.
type running struct {
	cli    *cli
	stdout *syncBuffer
	stderr *syncBuffer
	exit   chan int
}

// start runs the CLI with args in a goroutine, as the default release.
func start(t *testing.T, args ...string) *running {
	t.Helper()
	return startAs(t, version, args...)
}

// startAs runs the CLI with args in a goroutine, as release v.
func startAs(t *testing.T, v string, args ...string) *running {
	t.Helper()
	r := &running{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exit: make(chan int, 1)}
	r.cli = newCLI(nil, r.stdout, r.stderr)
	r.cli.version = v
	go func() { r.exit <- r.cli.run(args) }()
	t.Cleanup(func() {
		// Make sure nothing keeps running into the next test.
		select {
		case <-r.exit:
		default:
			r.cli.signalCh <- killSignalOf(args)
			select {
			case <-r.exit:
			case <-time.After(5 * time.Second):
				t.Errorf("stand-in did not stop")
			}
		}
	})
	return r
}

// killSignalOf is the -kill-signal in args (SIGINT by default).
func killSignalOf(args []string) os.Signal {
	cfg, _, err := parseFlags(args, releases[version])
	if err != nil {
		return syscall.SIGINT
	}
	return cfg.killSignal
}

// eachRelease runs fn as a subtest for every release the stand-in implements.
func eachRelease(t *testing.T, fn func(t *testing.T, rel release)) {
	for _, v := range []string{"0.19.0", "0.19.5"} {
		rel := releases[v]
		t.Run("v"+v, func(t *testing.T) { fn(t, rel) })
	}
}

// wait returns the exit status, failing the test after timeout.
func (r *running) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case code := <-r.exit:
		r.exit <- code // keep it for Cleanup
		return code
	case <-time.After(timeout):
		t.Fatalf("stand-in did not exit within %s\nstderr:\n%s", timeout, r.stderr)
		return -1
	}
}

// exited reports whether the process has exited, without blocking.
func (r *running) exited() bool {
	select {
	case code := <-r.exit:
		r.exit <- code
		return true
	default:
		return false
	}
}

// eventually polls cond until it holds or timeout expires.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

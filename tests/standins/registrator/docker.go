package main

// The Docker Engine API, over its unix socket, as registrator's Docker client
// (fsouza/go-dockerclient) uses it: unversioned paths, the container list, inspect,
// and the /events stream.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

type dockerClient struct {
	http *http.Client
	// stream dials a fresh connection for the event stream (no timeout on it).
	socket string
}

// errNoSuchContainer is what inspecting a container that is gone returns.
type errNoSuchContainer struct{ id string }

func (e errNoSuchContainer) Error() string { return "No such container: " + e.id }

func newDockerClient(host string) (*dockerClient, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "unix" {
		return nil, fmt.Errorf("DOCKER_HOST %q: only unix:// sockets are supported by the registrator stand-in", host)
	}
	socket := u.Path
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	return &dockerClient{
		http:   &http.Client{Transport: &http.Transport{DialContext: dial}},
		socket: socket,
	}, nil
}

func (c *dockerClient) get(path string, out interface{}) (int, error) {
	resp, err := c.http.Get("http://docker" + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		var msg struct{ Message string }
		_ = json.Unmarshal(body, &msg)
		return resp.StatusCode, fmt.Errorf("API error (%d): %s", resp.StatusCode, msg.Message)
	}
	return resp.StatusCode, json.Unmarshal(body, out)
}

// listedContainer is one entry of GET /containers/json.
type listedContainer struct {
	ID string `json:"Id"`
}

// listContainers lists running containers (the API's default), with `filters`.
func (c *dockerClient) listContainers(filters map[string][]string) ([]listedContainer, error) {
	path := "/containers/json"
	if len(filters) > 0 {
		f, _ := json.Marshal(filters)
		path += "?filters=" + url.QueryEscape(string(f))
	}
	var out []listedContainer
	_, err := c.get(path, &out)
	return out, err
}

type portBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string
}

// container is the part of GET /containers/<id>/json registrator reads.
type container struct {
	ID     string `json:"Id"`
	Name   string
	Config struct {
		Hostname     string
		Image        string
		Env          []string
		Labels       map[string]string
		ExposedPorts map[string]struct{}
	}
	HostConfig struct {
		NetworkMode string
	}
	NetworkSettings struct {
		IPAddress string
		Ports     map[string][]portBinding
		Networks  map[string]struct{ IPAddress string }
	}
	State struct {
		Running  bool
		ExitCode int
	}
	// raw is the whole answer, which tag templates see.
	raw map[string]interface{}
}

func (c *dockerClient) inspect(id string) (*container, error) {
	var raw json.RawMessage
	status, err := c.get("/containers/"+url.PathEscape(id)+"/json", &raw)
	if status == http.StatusNotFound {
		return nil, errNoSuchContainer{id}
	}
	if err != nil {
		return nil, err
	}
	out := &container{}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, err
	}
	_ = json.Unmarshal(raw, &out.raw)
	return out, nil
}

// event is one message of GET /events; Status/ID are the legacy fields registrator
// switches on (filled from Action/Actor for newer messages, as its client does).
type event struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	Type   string
	Action string
	Actor  struct{ ID string }
	Time   int64 `json:"time"`
}

// listen follows the event stream and returns the channel registrator reads.
//
// Faithful to registrator's Docker client (go-dockerclient v1.13.1, event.go): the
// stream is decoded into a queue of 100; one goroutine takes each event off the
// queue and, from a goroutine of its own, notes its time and offers it to the
// listener with a non-blocking send on an unbuffered channel. So an event that finds
// registrator busy is dropped, and two close events may arrive in either order.
// A connection that cannot be made is tried 5 more times (10 ms, doubling), then
// the channel is closed; so is it when the stream ends (the engine stopped or
// restarted): registrator then exits ("Docker event loop closed"). A message that
// does not decode makes it reconnect with ?since= the last event's time.
func (c *dockerClient) listen() <-chan *event {
	w := &eventWatcher{client: c, listener: make(chan *event)}
	go w.run()
	return w.listener
}

type eventWatcher struct {
	client   *dockerClient
	listener chan *event
	mu       sync.RWMutex
	lastSeen int64
	closed   bool
}

// endOfStream is queued when the stream ends.
var endOfStream = &event{Status: "EOF"}

func (w *eventWatcher) run() {
	for {
		queue := make(chan *event, 100)
		stream, err := w.connect()
		if err != nil {
			w.close()
			return
		}
		go w.decode(stream, queue)
		if ended := w.dispatch(queue); ended {
			w.close()
			return
		}
		// A decoding error: reconnect.
	}
}

// dispatch is the client's monitor loop, at its pace: each turn arms a 100 ms
// timer and waits for the next event or the timer.
func (w *eventWatcher) dispatch(queue <-chan *event) (ended bool) {
	for w.isOpen() {
		timeout := time.After(100 * time.Millisecond)
		select {
		case ev, ok := <-queue:
			if !ok {
				return false
			}
			if ev == endOfStream {
				return true
			}
			go func(ev *event) {
				w.noteTime(ev)
				w.offer(ev)
			}(ev)
		case <-timeout:
		}
	}
	return true
}

func (w *eventWatcher) isOpen() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return !w.closed
}

func (w *eventWatcher) noteTime(ev *event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev.Time > w.lastSeen {
		w.lastSeen = ev.Time
	}
}

func (w *eventWatcher) connect() (io.ReadCloser, error) {
	body, err := w.openStream()
	for retries := 0; err != nil && retries < 5; retries++ {
		time.Sleep(time.Duration(10*(1<<retries)) * time.Millisecond)
		body, err = w.openStream()
	}
	return body, err
}

func (w *eventWatcher) openStream() (io.ReadCloser, error) {
	conn, err := net.Dial("unix", w.client.socket)
	if err != nil {
		return nil, err
	}
	path := "/events"
	w.mu.RLock()
	if w.lastSeen != 0 {
		path += "?since=" + strconv.FormatInt(w.lastSeen, 10)
	}
	w.mu.RUnlock()
	req, _ := http.NewRequest(http.MethodGet, "http://docker"+path, nil)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	resp, err := client.Do(req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return resp.Body, nil
}

// decode queues the stream's events; at its end it queues endOfStream, after a
// message that does not decode it closes the queue.
func (w *eventWatcher) decode(stream io.ReadCloser, queue chan<- *event) {
	defer stream.Close()
	decoder := json.NewDecoder(stream)
	for {
		ev := &event{}
		if err := decoder.Decode(ev); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				queue <- endOfStream
			} else {
				close(queue)
			}
			return
		}
		if ev.Time == 0 {
			continue
		}
		if ev.Status == "" && (ev.Type == "container" || ev.Type == "image") {
			ev.Status = ev.Action
		}
		if ev.ID == "" {
			ev.ID = ev.Actor.ID
		}
		queue <- ev
	}
}

// offer hands one event to registrator if it is waiting for one, else drops it.
func (w *eventWatcher) offer(ev *event) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return
	}
	select {
	case w.listener <- ev:
	default: // registrator was busy: the event is lost
	}
}

func (w *eventWatcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.listener)
	}
}

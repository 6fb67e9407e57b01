package main

import (
	"testing"
	"time"
)

// go-dockerclient v1.13.1 event.go sendEvent: a non-blocking send on the listener
// channel, so an event offered while registrator is not waiting for one is lost.
func TestEventOfferedWhileBusyIsDropped(t *testing.T) {
	w := &eventWatcher{listener: make(chan *event)}
	done := make(chan struct{})
	go func() { w.offer(&event{Status: "start", ID: "a"}); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("offer blocked: the real client never waits for the listener")
	}
	select {
	case ev := <-w.listener:
		t.Fatalf("dropped event delivered later: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
	// One that finds registrator waiting is delivered.
	got := make(chan *event, 1)
	go func() { got <- <-w.listener }()
	time.Sleep(50 * time.Millisecond)
	w.offer(&event{Status: "die", ID: "b"})
	if ev := <-got; ev.ID != "b" {
		t.Fatalf("got %+v", ev)
	}
}

// After the stream ended the listener is closed (registrator then exits) and late
// offers are ignored.
func TestClosedWatcherIgnoresOffers(t *testing.T) {
	w := &eventWatcher{listener: make(chan *event)}
	w.close()
	w.offer(&event{Status: "start", ID: "a"})
	if _, open := <-w.listener; open {
		t.Fatal("listener still open")
	}
}

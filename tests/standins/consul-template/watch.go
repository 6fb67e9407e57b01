package main

import (
	"context"
	"log"
	"math"
	"reflect"
	"sync"
	"time"
)

const (
	// blockingWait is the wait= sent with every blocking query.
	blockingWait = 60 * time.Second

	// noChangePace is the shortest time between two requests of one view
	// when the previous answer brought nothing new. Real Consul holds
	// blocking queries open, so this never matters against it; it keeps a
	// fake Consul that answers immediately from being hammered in a tight
	// loop (the real tool would spin there).
	noChangePace = 100 * time.Millisecond

	// dataBufferSize is the capacity of the watcher's data channel.
	dataBufferSize = 2048
)

// retryConfig mirrors the -consul-retry* flags.
type retryConfig struct {
	enabled    bool
	attempts   int // 0 = unlimited
	backoff    time.Duration
	maxBackoff time.Duration // 0 = uncapped

	// capsBackoffFirst is v0.19.4's overflow fix (see release).
	capsBackoffFirst bool
}

// next reports whether failure number retry (0-based) may be retried and
// after how long: backoff * 2^retry, capped at maxBackoff. It is the real
// config/retry.go RetryFunc, overflow included.
//
// v0.19.0 computes time.Duration(2^retry) * backoff first and caps it after.
// The product wraps around int64 once 2^retry * backoff passes ~292 years
// (retry 36 with the default 250ms): the sleep turns negative (no wait) or
// small, and from retry 57 (250ms = 2^7 * 5^9 ns, 57+7 = 64) it is 0 for
// good. With -consul-retry-attempts=0 a view that keeps failing therefore
// ends up retrying in a tight loop (GH-1028).
//
// v0.19.4+ returns the cap once retry > int(log2(max/backoff)) and only
// computes the product below that (GH-1031). With no cap (max 0) it still
// overflows, as in the real tool.
func (c retryConfig) next(retry int) (bool, time.Duration) {
	if !c.enabled {
		return false, 0
	}
	if c.attempts > 0 && retry > c.attempts-1 {
		return false, 0
	}
	// Signed multiplication wraps in Go, as it did in the real binary.
	sleep := time.Duration(amd64Int64(math.Pow(2, float64(retry)))) * c.backoff
	if c.maxBackoff <= 0 {
		return true, sleep
	}
	if c.capsBackoffFirst {
		attemptsTillMaxBackoff := amd64Int64(math.Log2(c.maxBackoff.Seconds() / c.backoff.Seconds()))
		if int64(retry) > attemptsTillMaxBackoff {
			return true, c.maxBackoff
		}
		return true, sleep
	}
	if c.maxBackoff < sleep {
		return true, c.maxBackoff
	}
	return true, sleep
}

// viewUpdate carries new data of one dependency to the runner.
type viewUpdate struct {
	dep  dependency
	data interface{}
}

// view polls one dependency with blocking queries and reports changes.
type view struct {
	dep    dependency
	client *consulClient
	log    *log.Logger
	once   bool
	retry  retryConfig
	// maxStale is -max-stale (default 2s): reads are ?stale unless it is 0.
	maxStale time.Duration

	ctx    context.Context
	cancel context.CancelFunc

	lastIndex   uint64
	data        interface{}
	received    bool
	warnedIndex bool
}

func (v *view) stop() { v.cancel() }

// sleep waits for d or until the view is stopped; false means stopped.
func (v *view) sleep(d time.Duration) bool {
	if d <= 0 {
		return v.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-v.ctx.Done():
		return false
	}
}

// poll runs until the view is stopped, the data was delivered once in
// -once mode, or the retries are exhausted (the error then goes to errCh
// and, through the runner, makes the process exit).
func (v *view) poll(dataCh chan<- viewUpdate, errCh chan<- error) {
	retries := 0
	stale := v.maxStale != 0
	for {
		if v.ctx.Err() != nil {
			return
		}
		started := time.Now()
		data, meta, err := v.dep.fetch(v.ctx, v.client, queryOptions{index: v.lastIndex, wait: blockingWait, stale: stale})
		if err != nil {
			if v.ctx.Err() != nil {
				return
			}
			if ok, sleep := v.retry.next(retries); ok {
				v.log.Printf("[WARN] (view) %s (retry attempt %d after %q)", err, retries+1, sleep)
				if !v.sleep(sleep) {
					return
				}
				retries++
				stale = v.maxStale != 0
				continue
			}
			v.log.Printf("[ERR] (view) %s (exceeded maximum retries)", err)
			select {
			case errCh <- err:
			case <-v.ctx.Done():
			}
			return
		}
		// Any successful answer resets the retry counter.
		retries = 0

		// watch/view.go fetch: a stale answer whose X-Consul-LastContact is
		// over max_stale is asked again at once without ?stale (a consistent
		// read from the leader); the request after that is stale again.
		if stale && meta.lastContact > v.maxStale {
			stale = false
			v.log.Printf("[TRACE] (view) %s stale data (last contact exceeded max_stale)", v.dep)
			continue
		}
		stale = v.maxStale != 0

		if !v.accept(data, meta) {
			if !v.sleep(noChangePace - time.Since(started)) {
				return
			}
			continue
		}

		v.log.Printf("[TRACE] (view) %s received data", v.dep)
		select {
		case dataCh <- viewUpdate{dep: v.dep, data: data}:
		case <-v.ctx.Done():
			return
		}
		if v.once {
			return
		}
	}
}

// accept applies consul-template's rules for when an answer is news.
func (v *view) accept(data interface{}, meta queryMeta) bool {
	if !meta.hasIndex && !v.warnedIndex {
		// Not a consul-template message: the real tool just never delivers
		// data in this case, which is very hard to diagnose.
		v.warnedIndex = true
		v.log.Printf("[WARN] (view) %s: response has no valid X-Consul-Index header; "+
			"consul-template treats it as index 0 and waits for a change that never comes (stand-in note)", v.dep)
	}
	if meta.index == v.lastIndex {
		v.log.Printf("[TRACE] (view) %s no new data (index was the same)", v.dep)
		return false
	}
	if meta.index < v.lastIndex {
		v.log.Printf("[TRACE] (view) %s had a lower index, resetting", v.dep)
		v.lastIndex = 0
		return false
	}
	v.lastIndex = meta.index
	if v.received && reflect.DeepEqual(data, v.data) {
		v.log.Printf("[TRACE] (view) %s no new data (contents were the same)", v.dep)
		return false
	}
	if data == nil && v.dep.blockOnNil() {
		v.log.Printf("[TRACE] (view) %s asked for blocking query", v.dep)
		return false
	}
	v.data = data
	v.received = true
	return true
}

// watcher owns the views of all dependencies currently in use.
type watcher struct {
	client   *consulClient
	log      *log.Logger
	once     bool
	retry    retryConfig
	maxStale time.Duration

	dataCh chan viewUpdate
	errCh  chan error

	mu      sync.Mutex
	views   map[string]*view
	stopped bool // no new views after stop
}

func newWatcher(client *consulClient, logger *log.Logger, once bool, retry retryConfig, maxStale time.Duration) *watcher {
	return &watcher{
		client:   client,
		log:      logger,
		once:     once,
		retry:    retry,
		maxStale: maxStale,
		dataCh:   make(chan viewUpdate, dataBufferSize),
		errCh:    make(chan error, 1),
		views:    map[string]*view{},
	}
}

// add starts watching d; it is a no-op when d is already watched or the
// watcher was stopped.
func (w *watcher) add(d dependency) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.views[d.String()]; ok || w.stopped {
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &view{dep: d, client: w.client, log: w.log, once: w.once, retry: w.retry, maxStale: w.maxStale, ctx: ctx, cancel: cancel}
	w.views[d.String()] = v
	w.log.Printf("[DEBUG] (watcher) adding %s", d)
	go v.poll(w.dataCh, w.errCh)
	return true
}

func (w *watcher) watching(d dependency) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.views[d.String()]
	return ok
}

func (w *watcher) remove(d dependency) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v, ok := w.views[d.String()]; ok {
		w.log.Printf("[DEBUG] (watcher) removing %s", d)
		v.stop()
		delete(w.views, d.String())
	}
}

func (w *watcher) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.views)
}

func (w *watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for k, v := range w.views {
		v.stop()
		delete(w.views, k)
	}
}

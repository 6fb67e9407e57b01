package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// saneViewLimit is the number of watched dependencies above which the
// real tool warns about load on Consul.
const saneViewLimit = 128

// renderEvent records that a template has been rendered (or would have
// been, had the file not already been up to date).
type renderEvent struct {
	wouldRender bool
	didRender   bool
}

// runner renders the templates whenever their data changes.
type runner struct {
	cfg       *config
	dry, once bool
	log       *log.Logger
	out       io.Writer // -dry output and command stdout
	commands  *commandRunner

	templates  []*tmpl
	configsFor map[string][]templateSpec // by tmpl.id, in flag order

	// Owned by the start goroutine.
	brain         *brain
	watcher       *watcher
	dependencies  map[string]dependency
	renderEvents  map[string]*renderEvent
	quiescenceMap map[string]*quiescence
	quiescenceCh  chan *tmpl

	// ErrCh receives the error that ended the runner; DoneCh is closed
	// when it stops normally (after -once, or Stop).
	ErrCh  chan error
	DoneCh chan struct{}

	// quitCh is closed when the runner ends for any reason (DoneCh only on
	// a normal stop); it releases the quiescence timers.
	quitCh   chan struct{}
	quitOnce sync.Once

	stopMu  sync.Mutex
	stopped bool
}

func newRunner(cfg *config, dry, once bool, logger *log.Logger, stdin io.Reader, stdout, stderr io.Writer) (*runner, error) {
	logger.Printf("[INFO] (runner) creating new runner (dry: %t, once: %t)", dry, once)
	// The real line is the whole config as JSON, the Consul token in clear
	// text included (v0.19.0 and v0.19.5 alike; see finalconfig.go): at
	// -log-level=debug or trace the token is in the log, here too.
	final, err := finalConfigJSON(cfg)
	if err != nil {
		return nil, err
	}
	logger.Printf("[DEBUG] (runner) final config: %s", final)

	client, err := newConsulClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	logger.Printf("[INFO] (runner) creating watcher")

	r := &runner{
		cfg:           cfg,
		dry:           dry,
		once:          once,
		log:           logger,
		out:           stdout,
		configsFor:    map[string][]templateSpec{},
		brain:         newBrain(),
		watcher:       newWatcher(client, logger, once, cfg.retry, cfg.maxStale),
		dependencies:  map[string]dependency{},
		renderEvents:  map[string]*renderEvent{},
		quiescenceMap: map[string]*quiescence{},
		quiescenceCh:  make(chan *tmpl),
		ErrCh:         make(chan error, 1),
		DoneCh:        make(chan struct{}),
		quitCh:        make(chan struct{}),
	}
	r.commands = &commandRunner{
		stdin:   stdin,
		stdout:  stdout,
		stderr:  stderr,
		env:     append(os.Environ(), r.childEnv()...),
		timeout: cfg.commandTimeout,
		log:     logger,
	}

	for _, spec := range cfg.templates {
		t, err := newTmpl(spec.Source)
		if err != nil {
			return nil, err
		}
		if _, ok := r.configsFor[t.id]; !ok {
			r.templates = append(r.templates, t)
		}
		r.configsFor[t.id] = append(r.configsFor[t.id], spec)
	}
	return r, nil
}

// childEnv is the environment consul-template adds for commands (and that
// `env` sees first): manager/runner.go childEnv. The token is not in it, so a
// command sees a token only if it came from the environment (inherited).
func (r *runner) childEnv() []string {
	var env []string
	if r.cfg.consulAddr != "" {
		env = append(env, "CONSUL_HTTP_ADDR="+r.cfg.consulAddr)
	}
	if r.cfg.consulAuth != "" {
		env = append(env, "CONSUL_HTTP_AUTH="+r.cfg.consulAuth)
	}
	env = append(env,
		"CONSUL_HTTP_SSL="+strconv.FormatBool(r.cfg.consulSSL),
		"CONSUL_HTTP_SSL_VERIFY="+strconv.FormatBool(r.cfg.consulSSLVerify),
	)
	return env
}

// start runs until the runner fails (ErrCh), finishes (-once) or is
// stopped. It must run in its own goroutine.
func (r *runner) start() {
	r.log.Printf("[INFO] (runner) starting")
	if err := r.storePid(); err != nil {
		r.fail(err)
		return
	}

	// The first pass discovers the first dependencies (and renders
	// templates that need no data at all).
	r.log.Printf("[DEBUG] (runner) running initial templates")
	if err := r.run(); err != nil {
		r.fail(err)
		return
	}

	for {
		if r.cfg.wait.enabled {
			for _, t := range r.templates {
				if _, ok := r.quiescenceMap[t.id]; !ok {
					r.log.Printf("[DEBUG] (runner) enabling global quiescence for %q", t.id)
					r.quiescenceMap[t.id] = newQuiescence(r.quiescenceCh, r.quitCh, r.cfg.wait.min, r.cfg.wait.max, t)
				}
			}
		}

		if n := r.watcher.size(); n > saneViewLimit {
			r.log.Printf("[WARN] (runner) watching %d dependencies - watching this "+
				"many dependencies could DDoS your consul cluster", n)
		} else {
			r.log.Printf("[DEBUG] (runner) watching %d dependencies", n)
		}

		if r.allTemplatesRendered() {
			if r.cfg.release.runLogAtDebug {
				r.log.Printf("[DEBUG] (runner) all templates rendered")
			}
			if r.once {
				r.log.Printf("[INFO] (runner) once mode and all templates rendered")
				r.Stop()
				return
			}
		}

		select {
		case u := <-r.watcher.dataCh:
			r.receive(u)
			// Drain whatever else is already queued so a burst of updates
			// costs one evaluation, not one per update.
		drain:
			for {
				select {
				case u := <-r.watcher.dataCh:
					r.receive(u)
				default:
					break drain
				}
			}
		case err := <-r.watcher.errCh:
			r.log.Printf("[ERR] (runner) watcher reported error: %s", err)
			r.fail(err)
			return
		case t := <-r.quiescenceCh:
			r.log.Printf("[DEBUG] (runner) received template %q from quiescence", t.id)
			delete(r.quiescenceMap, t.id)
		case <-r.DoneCh:
			r.log.Printf("[INFO] (runner) received finish")
			return
		}

		if err := r.run(); err != nil {
			r.fail(err)
			return
		}
	}
}

// fail reports err and stops watching (without the normal Stop, so
// DoneCh stays open and the pid file stays, as in the real tool).
func (r *runner) fail(err error) {
	r.quit()
	select {
	case r.ErrCh <- err:
	default:
	}
}

// receive stores new data, unless the dependency is no longer used (an
// update can still be queued for a dependency dropped by the last pass).
func (r *runner) receive(u viewUpdate) {
	if _, ok := r.dependencies[u.dep.String()]; ok {
		r.log.Printf("[DEBUG] (runner) receiving dependency %s", u.dep)
		r.brain.remember(u.dep, u.data)
	}
}

// run is one pass over all templates: evaluate, start watching what is
// new, render what has all its data (unless quiescence holds it back), then
// run the commands of the templates whose files changed.
func (r *runner) run() error {
	if r.cfg.release.runLogAtDebug {
		r.log.Printf("[DEBUG] (runner) initiating run")
	} else {
		r.log.Printf("[INFO] (runner) initiating run")
	}

	var commands []templateSpec
	depsMap := map[string]dependency{}

	for _, t := range r.templates {
		r.log.Printf("[DEBUG] (runner) checking template %s", t.id)

		if r.once {
			if _, done := r.renderEvents[t.id]; done {
				r.log.Printf("[DEBUG] (runner) once mode and already rendered")
				continue
			}
		}

		res, err := t.execute(r.brain, r.childEnv(), r.cfg.release)
		if err != nil {
			return fmt.Errorf("%s: %w", t.source, err)
		}

		missing := res.missing
		for _, d := range res.used.list {
			if !r.watcher.watching(d) {
				missing.add(d)
			}
			depsMap[d.String()] = d
		}

		var unwatched []dependency
		for _, d := range missing.list {
			if !r.watcher.watching(d) {
				unwatched = append(unwatched, d)
			}
		}
		if len(unwatched) > 0 {
			r.log.Printf("[DEBUG] (runner) was not watching %d dependencies", len(unwatched))
			for _, d := range unwatched {
				r.watcher.add(d)
			}
			continue
		}
		if missing.len() > 0 {
			r.log.Printf("[DEBUG] (runner) missing data for %d dependencies", missing.len())
			continue
		}

		if q, ok := r.quiescenceMap[t.id]; ok {
			q.tick()
			continue
		}

		event := &renderEvent{}
		for _, spec := range r.configsFor[t.id] {
			r.log.Printf("[DEBUG] (runner) rendering %s", spec.display())
			result, err := render(spec.Destination, res.output, r.cfg.release.keepsFileMode, r.dry, r.out)
			if err != nil {
				return fmt.Errorf("error rendering %s: %w", spec.display(), err)
			}
			if result.wouldRender {
				event.wouldRender = true
			}
			if !result.didRender {
				continue
			}
			r.log.Printf("[INFO] (runner) rendered %s", spec.display())
			event.didRender = true
			if r.dry || spec.Command == "" {
				continue
			}
			// Commands keep their flag order and each distinct command
			// runs once per pass, however many templates share it.
			if !hasCommand(commands, spec.Command) {
				r.log.Printf("[DEBUG] (runner) appending command %q from %s", spec.Command, spec.display())
				commands = append(commands, spec)
			}
		}
		r.renderEvents[t.id] = event
	}

	r.diffAndUpdateDeps(depsMap)

	var errs []error
	for _, spec := range commands {
		r.log.Printf("[INFO] (runner) executing command %q from %s", spec.Command, spec.display())
		if err := r.commands.run(spec.Command); err != nil {
			errs = append(errs, fmt.Errorf("failed to execute command %q from %s: %w", spec.Command, spec.display(), err))
		}
	}
	return joinErrors(errs)
}

func hasCommand(list []templateSpec, command string) bool {
	for _, s := range list {
		if s.Command == command {
			return true
		}
	}
	return false
}

// diffAndUpdateDeps stops watching (and forgets) dependencies that no
// template used in the last pass.
func (r *runner) diffAndUpdateDeps(depsMap map[string]dependency) {
	for k, d := range r.dependencies {
		if _, ok := depsMap[k]; !ok {
			r.log.Printf("[DEBUG] (runner) %s is no longer needed", d)
			r.watcher.remove(d)
			r.brain.forget(d)
		}
	}
	r.dependencies = depsMap
}

func (r *runner) allTemplatesRendered() bool {
	for _, t := range r.templates {
		if _, ok := r.renderEvents[t.id]; !ok {
			return false
		}
	}
	return true
}

// Stop halts watching and closes DoneCh. It is safe to call repeatedly and
// from any goroutine.
func (r *runner) Stop() {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopped {
		return
	}
	r.log.Printf("[INFO] (runner) stopping")
	r.quit()
	if err := r.deletePid(); err != nil {
		r.log.Printf("[WARN] (runner) could not remove pid at %q: %s", r.cfg.pidFile, err)
	}
	r.stopped = true
	close(r.DoneCh)
}

// quit stops all watches and timers.
func (r *runner) quit() {
	r.quitOnce.Do(func() {
		r.watcher.stop()
		close(r.quitCh)
	})
}

func (r *runner) storePid() error {
	if r.cfg.pidFile == "" {
		return nil
	}
	r.log.Printf("[INFO] creating pid file at %q", r.cfg.pidFile)
	if err := os.WriteFile(r.cfg.pidFile, []byte(strconv.Itoa(os.Getpid())), 0666); err != nil {
		return fmt.Errorf("runner: could not write to pid file: %w", err)
	}
	return nil
}

func (r *runner) deletePid() error {
	if r.cfg.pidFile == "" {
		return nil
	}
	if err := os.Remove(r.cfg.pidFile); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// joinErrors formats several errors the way consul-template prints them.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("1 error occurred:\n\n* %w", errs[0])
	}
	points := make([]string, len(errs))
	for i, err := range errs {
		points[i] = "* " + err.Error()
	}
	return fmt.Errorf("%d errors occurred:\n\n%s", len(errs), strings.Join(points, "\n"))
}

// quiescence implements -wait for one template: each tick (new data while
// the template is renderable) pushes the render back to `min` from now,
// but never past `max` after the first tick. When the timer fires the
// template is sent on ch and the runner renders it.
type quiescence struct {
	template *tmpl
	min, max time.Duration
	ch       chan<- *tmpl
	done     <-chan struct{}
	timer    *time.Timer
	deadline time.Time
}

func newQuiescence(ch chan<- *tmpl, done <-chan struct{}, min, max time.Duration, t *tmpl) *quiescence {
	return &quiescence{template: t, min: min, max: max, ch: ch, done: done}
}

func (q *quiescence) tick() {
	now := time.Now()
	if q.timer == nil {
		q.timer = time.NewTimer(q.min)
		q.deadline = now.Add(q.max)
		go func() {
			select {
			case <-q.timer.C:
				select {
				case q.ch <- q.template:
				case <-q.done:
				}
			case <-q.done:
			}
		}()
		return
	}
	// A Reset after the timer fired is harmless: the goroutine above reads
	// the timer only once and the runner replaces this quiescence.
	if now.Add(q.min).Before(q.deadline) {
		q.timer.Reset(q.min)
	} else if d := q.deadline.Sub(now); d > 0 {
		q.timer.Reset(d)
	}
}

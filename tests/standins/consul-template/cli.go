package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses of consul-template v0.19 (they start at 10; 11 is
// unused). Note that a failing template command or giving up on Consul is
// a runner error (14), not 1.
const (
	exitCodeOK              = 0
	exitCodeInterrupt       = 12 // the kill signal (default SIGINT) was received
	exitCodeParseFlagsError = 13 // bad command line
	exitCodeRunnerError     = 14 // command failed, Consul unreachable, bad template, ...
	exitCodeConfigError     = 15 // e.g. invalid -log-level
)

// cli is the process: it parses the command line, runs a runner and
// handles signals.
type cli struct {
	// version is the release to behave as (main.version unless a test
	// picks another).
	version string

	stdin       io.Reader
	out, errOut io.Writer

	// signalCh receives the signals to act on. Tests feed it directly;
	// main sets notifySignals so the real signals are routed to it.
	signalCh      chan os.Signal
	notifySignals bool
}

func newCLI(stdin io.Reader, out, errOut io.Writer) *cli {
	return &cli{version: version, stdin: stdin, out: out, errOut: errOut, signalCh: make(chan os.Signal, 1)}
}

// notifiedSignals is what the process catches. The real tool catches every
// signal; those it does not act on (for example SIGTERM with the default
// -kill-signal) are only forwarded to an -exec child, i.e. ignored here.
// SIGCHLD and SIGURG are left out: they are routine noise (child exits,
// Go runtime preemption).
func notifiedSignals() []os.Signal {
	var sigs []os.Signal
	for _, s := range signalLookup {
		switch s {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGURG:
			continue
		}
		sigs = append(sigs, s)
	}
	return sigs
}

// run executes the command line args (without the program name) and
// returns the exit status.
func (c *cli) run(args []string) int {
	rel, err := releaseFor(c.version)
	if err != nil {
		fmt.Fprintln(c.errOut, err.Error())
		return exitCodeConfigError
	}
	cfg, opts, err := parseFlags(args, rel)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(c.errOut, usageText, rel.version)
			return exitCodeOK
		}
		fmt.Fprintln(c.errOut, err.Error())
		return exitCodeParseFlagsError
	}
	cfg.finalize()

	logger, err := newLogger(c.errOut, cfg.logLevel)
	if err != nil {
		// Logging is not set up yet: report with the default log format.
		return logError(log.New(c.errOut, "", log.LstdFlags), err, exitCodeConfigError)
	}

	logger.Printf("[INFO] %s", rel.humanVersion())
	if opts.version {
		logger.Printf("[DEBUG] (cli) version flag was given, exiting now")
		// Like the real tool, the version goes to stderr.
		fmt.Fprintf(c.errOut, "%s\n", rel.humanVersion())
		return exitCodeOK
	}

	if c.notifySignals {
		signal.Notify(c.signalCh, notifiedSignals()...)
		defer signal.Stop(c.signalCh)
	}

	r, err := newRunner(cfg, opts.dry, opts.once, logger, c.stdin, c.out, c.errOut)
	if err != nil {
		return logError(logger, err, exitCodeRunnerError)
	}
	go r.start()

	for {
		select {
		case err := <-r.ErrCh:
			return logError(logger, err, exitCodeRunnerError)
		case <-r.DoneCh:
			return exitCodeOK
		case s := <-c.signalCh:
			logger.Printf("[DEBUG] (cli) receiving signal %q", s)
			switch s {
			case cfg.reloadSignal:
				// Templates are re-read from disk and every dependency is
				// fetched afresh; files are only rewritten (and commands
				// only run) where the output changed.
				fmt.Fprintf(c.errOut, "Reloading configuration...\n")
				r.Stop()
				r, err = newRunner(cfg, opts.dry, opts.once, logger, c.stdin, c.out, c.errOut)
				if err != nil {
					return logError(logger, err, exitCodeRunnerError)
				}
				go r.start()
			case cfg.killSignal:
				fmt.Fprintf(c.errOut, "Cleaning up...\n")
				r.Stop()
				return exitCodeInterrupt
			default:
				// Would be forwarded to the -exec child; there is none.
			}
		}
	}
}

func logError(l *log.Logger, err error, status int) int {
	l.Printf("[ERR] (cli) %s", err)
	return status
}

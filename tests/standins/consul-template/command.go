package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// How template commands run in consul-template v0.19.0 (v0.18.0 - v0.26.x):
// the command string is split into words by a small shell-words parser and
// executed DIRECTLY, without /bin/sh. The parser understands quotes,
// backslashes, $VAR/${VAR} and `backticks`, and it silently STOPS at the
// first unquoted ; & | < or >. So
//
//	nginx -s reload || true
//
// runs `nginx -s reload` and the `|| true` guard is dropped: a failing
// reload still makes consul-template exit. The documented guard is to run
// a shell explicitly:
//
//	/bin/sh -c 'nginx -s reload || true'
//
// (v0.27.0 switched to `/bin/sh -c <command>`; both forms behave the same
// with an explicit shell, which is why the stand-in keeps v0.19 semantics.)

var (
	errInvalidCommandLine = errors.New("invalid command line string")
	envRefRe              = regexp.MustCompile(`\$({[a-zA-Z0-9_]+}|[a-zA-Z0-9_]+)`)
)

// expandEnv replaces $VAR and ${VAR} in a finished word. Like the real
// parser this happens after quote removal, so it applies inside single
// quotes too.
func expandEnv(s string) string {
	return envRefRe.ReplaceAllStringFunc(s, func(ref string) string {
		name := strings.TrimSuffix(strings.TrimPrefix(ref[1:], "{"), "}")
		return os.Getenv(name)
	})
}

// backtickOutput runs the text between backticks with $SHELL -c (sh when
// unset) and returns its trimmed output.
func backtickOutput(line string) (string, error) {
	shell := os.Getenv("SHELL")
	if shell == "" {
		shell = "sh"
	}
	out, err := exec.Command(shell, "-c", line).Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// parseCommandLine splits a template command into argv (see above). The
// second result is the unparsed tail when the parser stopped at a shell
// operator ("" otherwise).
func parseCommandLine(line string) ([]string, string, error) {
	var args []string
	var buf, backtick strings.Builder
	var escaped, inDouble, inSingle, inBacktick, got bool
	rest := ""

	flush := func() {
		args = append(args, expandEnv(buf.String()))
		buf.Reset()
		got = false
	}

scan:
	for i, r := range line {
		if escaped {
			buf.WriteRune(r)
			escaped = false
			continue
		}
		if r == '\\' {
			if inSingle {
				buf.WriteRune(r)
			} else {
				escaped = true
			}
			continue
		}
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			switch {
			case inSingle || inDouble || inBacktick:
				buf.WriteRune(r)
				backtick.WriteRune(r)
			case got:
				flush()
			}
			continue
		}
		switch r {
		case '`':
			if !inSingle && !inDouble {
				if inBacktick {
					out, err := backtickOutput(backtick.String())
					if err != nil {
						return nil, "", err
					}
					// The real parser replaces the whole word with the output.
					buf.Reset()
					buf.WriteString(out)
				}
				backtick.Reset()
				inBacktick = !inBacktick
				continue
			}
		case '"':
			if !inSingle {
				inDouble = !inDouble
				continue
			}
		case '\'':
			if !inDouble {
				inSingle = !inSingle
				continue
			}
		case ';', '&', '|', '<', '>':
			if !inSingle && !inDouble && !inBacktick {
				rest = line[i:]
				break scan
			}
		}
		got = true
		buf.WriteRune(r)
		if inBacktick {
			backtick.WriteRune(r)
		}
	}
	if got {
		flush()
	}
	if escaped || inSingle || inDouble || inBacktick {
		return nil, "", errInvalidCommandLine
	}
	return args, rest, nil
}

// commandRunner runs template commands.
type commandRunner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            []string
	timeout        time.Duration
	log            interface{ Printf(string, ...interface{}) }
}

// run executes command and waits for it. A non-zero exit status, a
// command that cannot be started and a command still running after the
// timeout (it is then killed) are all errors.
func (c *commandRunner) run(command string) error {
	args, rest, err := parseCommandLine(command)
	if err != nil {
		return fmt.Errorf("failed parsing command: %w", err)
	}
	if len(args) == 0 {
		return fmt.Errorf("failed parsing command: no command in %q", command)
	}
	if rest != "" {
		// Not a consul-template message; the real tool drops it silently.
		c.log.Printf("[WARN] (child) ignoring %q after a shell operator: template commands do not run "+
			"in a shell in consul-template v0.19 (wrap it: /bin/sh -c '...') (stand-in note)", rest)
	}
	display := strings.Join(args, " ")

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = c.stdin
	cmd.Stdout = c.stdout
	cmd.Stderr = c.stderr
	cmd.Env = c.env

	c.log.Printf("[INFO] (child) spawning: %s", display)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("child: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var timeoutCh <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(c.timeout)
		defer t.Stop()
		timeoutCh = t.C
	}

	select {
	case err := <-done:
		if err != nil {
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				return fmt.Errorf("child: command exited with a non-zero exit status:\n"+
					"\n"+
					"    %s\n"+
					"\n"+
					"This is assumed to be a failure. Please ensure the command\n"+
					"exits with a zero exit status.", display)
			}
			return fmt.Errorf("child: %w", err)
		}
		return nil
	case <-timeoutCh:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		return fmt.Errorf("child: command did not exit within %q:\n"+
			"\n"+
			"    %s\n"+
			"\n"+
			"Commands must exit in a timely manner in order for processing to\n"+
			"continue. Consider using a process supervisor or utilizing the\n"+
			"built-in exec mode instead.", c.timeout, display)
	}
}

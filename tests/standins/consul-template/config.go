package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of consul-template (the same in v0.19.0 and v0.19.5).
const (
	defaultRetryAttempts   = 12
	defaultRetryBackoff    = 250 * time.Millisecond
	defaultRetryMaxBackoff = 1 * time.Minute
	defaultLogLevel        = "WARN"
	defaultCommandTimeout  = 30 * time.Second
	defaultFilePerms       = os.FileMode(0644)
	defaultConsulAddress   = "127.0.0.1:8500"
	// config/config.go DefaultMaxStale: every query is sent with ?stale
	// unless -max-stale=0.
	defaultMaxStale = 2 * time.Second
)

// config is the runtime configuration assembled from the command line and
// the environment.
type config struct {
	release release

	consulAddr      string // as given (flag or CONSUL_HTTP_ADDR); "" means default
	consulToken     string
	consulTokenSet  bool   // -consul-token was given, even empty
	consulAuth      string // "user[:password]"
	consulSSL       bool
	consulSSLVerify bool

	retry retryConfig
	wait  waitConfig

	templates []templateSpec

	logLevel     string
	killSignal   os.Signal
	reloadSignal os.Signal
	pidFile      string
	maxStale     time.Duration

	// commandTimeout is the real tool's template "command_timeout"; it has
	// no command-line flag in v0.19.0, only a config-file setting.
	commandTimeout time.Duration
}

func defaultConfig(rel release) *config {
	return &config{
		release:         rel,
		consulSSLVerify: true,
		retry: retryConfig{
			enabled:          true,
			attempts:         defaultRetryAttempts,
			backoff:          defaultRetryBackoff,
			maxBackoff:       defaultRetryMaxBackoff,
			capsBackoffFirst: rel.capsBackoffFirst,
		},
		killSignal:     syscall.SIGINT,
		reloadSignal:   syscall.SIGHUP,
		maxStale:       defaultMaxStale,
		commandTimeout: defaultCommandTimeout,
	}
}

// finalize fills in values that come from the environment when they were
// not given on the command line, as the real tool does.
func (c *config) finalize() {
	if c.consulAddr == "" {
		c.consulAddr = os.Getenv("CONSUL_HTTP_ADDR")
	}
	// config/consul.go Finalize: without -consul-token, the first non-empty
	// of CONSUL_TOKEN and CONSUL_HTTP_TOKEN, trimmed.
	if !c.consulTokenSet {
		c.consulToken = strings.TrimSpace(firstEnv([]string{"CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"}, ""))
	}
	// dependency/client_set.go starts from the Consul API's DefaultConfig,
	// which reads CONSUL_HTTP_TOKEN as it is, and overrides it only with a
	// non-empty token: so -consul-token="" still sends $CONSUL_HTTP_TOKEN.
	if c.consulToken == "" {
		c.consulToken = os.Getenv("CONSUL_HTTP_TOKEN")
	}
	if c.logLevel == "" {
		c.logLevel = firstEnv([]string{"CT_LOG", "CONSUL_TEMPLATE_LOG"}, defaultLogLevel)
	}
}

func firstEnv(names []string, def string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return def
}

// ---------------------------------------------------------------------------
// -template

// templateSpec is one -template "source:destination[:command]" argument.
type templateSpec struct {
	Source      string
	Destination string
	Command     string
}

// display renders the spec the way the real tool prints it in its logs and
// error messages: "source" => "destination".
func (t templateSpec) display() string {
	return fmt.Sprintf("%q => %q", t.Source, t.Destination)
}

var (
	errTemplateEmpty         = errors.New("template: cannot be empty")
	errTemplateInvalidFormat = errors.New("template: invalid format")

	// templatePartRe splits the -template value on colons. The optional
	// "X:" prefix keeps Windows drive letters ("C:\foo") in one part.
	templatePartRe = regexp.MustCompile(`([a-zA-Z]:)?([^:]+)`)
)

// parseTemplateSpec is config/template.go ParseTemplateConfig. Both releases
// split the value on every colon (empty parts vanish). v0.19.0 rejects more
// than three parts, so a command with a colon (a URL, "host:port") is a flag
// error; v0.19.4+ joins the parts after the second with ":" (GH-1026).
func parseTemplateSpec(s string, rel release) (templateSpec, error) {
	if strings.TrimSpace(s) == "" {
		return templateSpec{}, errTemplateEmpty
	}
	parts := templatePartRe.FindAllString(s, -1)
	var t templateSpec
	switch len(parts) {
	case 1:
		t.Source = parts[0]
	case 2:
		t.Source, t.Destination = parts[0], parts[1]
	case 3:
		t.Source, t.Destination, t.Command = parts[0], parts[1], parts[2]
	default:
		if !rel.colonsInCommand {
			return templateSpec{}, errTemplateInvalidFormat
		}
		// Indexed without a length check, as in v0.19.5: a value made of
		// colons only (no part at all) panics there, and here too.
		t.Source, t.Destination = parts[0], parts[1]
		t.Command = strings.Join(parts[2:], ":")
	}
	return t, nil
}

// ---------------------------------------------------------------------------
// -wait

type waitConfig struct {
	enabled  bool
	min, max time.Duration
}

var (
	errWaitEmpty         = errors.New("wait: cannot be empty")
	errWaitInvalidFormat = errors.New("wait: invalid format")
	errWaitNegative      = errors.New("wait: cannot be negative")
	errWaitMinLTMax      = errors.New("wait: min must be less than max")
)

// parseWait parses "min[:max]". When max is omitted it defaults to 4*min,
// and quiescence is only enabled when min is non-zero.
func parseWait(s string) (waitConfig, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return waitConfig{}, errWaitEmpty
	}
	parts := strings.Split(s, ":")
	var w waitConfig
	var err error
	switch len(parts) {
	case 1:
		if w.min, err = time.ParseDuration(strings.TrimSpace(parts[0])); err != nil {
			return waitConfig{}, err
		}
		w.max = 4 * w.min
	case 2:
		if w.min, err = time.ParseDuration(strings.TrimSpace(parts[0])); err != nil {
			return waitConfig{}, err
		}
		if w.max, err = time.ParseDuration(strings.TrimSpace(parts[1])); err != nil {
			return waitConfig{}, err
		}
	default:
		return waitConfig{}, errWaitInvalidFormat
	}
	if w.min < 0 || w.max < 0 {
		return waitConfig{}, errWaitNegative
	}
	if w.max < w.min {
		return waitConfig{}, errWaitMinLTMax
	}
	w.enabled = w.min != 0
	return w, nil
}

// ---------------------------------------------------------------------------
// signals

var signalLookup = map[string]syscall.Signal{
	"SIGABRT": syscall.SIGABRT,
	"SIGALRM": syscall.SIGALRM,
	"SIGBUS":  syscall.SIGBUS,
	"SIGCHLD": syscall.SIGCHLD,
	"SIGCONT": syscall.SIGCONT,
	"SIGFPE":  syscall.SIGFPE,
	"SIGHUP":  syscall.SIGHUP,
	"SIGILL":  syscall.SIGILL,
	"SIGINT":  syscall.SIGINT,
	"SIGIO":   syscall.SIGIO,
	"SIGIOT":  syscall.SIGIOT,
	"SIGKILL": syscall.SIGKILL,
	"SIGPIPE": syscall.SIGPIPE,
	"SIGPROF": syscall.SIGPROF,
	"SIGQUIT": syscall.SIGQUIT,
	"SIGSEGV": syscall.SIGSEGV,
	"SIGSTOP": syscall.SIGSTOP,
	"SIGSYS":  syscall.SIGSYS,
	"SIGTERM": syscall.SIGTERM,
	"SIGTRAP": syscall.SIGTRAP,
	"SIGTSTP": syscall.SIGTSTP,
	"SIGTTIN": syscall.SIGTTIN,
	"SIGTTOU": syscall.SIGTTOU,
	"SIGURG":  syscall.SIGURG,
	"SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2,
	"SIGXCPU": syscall.SIGXCPU,
	"SIGXFSZ": syscall.SIGXFSZ,
}

// parseSignal looks a -kill-signal / -reload-signal name up; v0.19.5 also
// knows SIGWINCH.
func parseSignal(s string, rel release) (os.Signal, error) {
	name := strings.ToUpper(s)
	if name == "SIGWINCH" && rel.sigwinch {
		return syscall.SIGWINCH, nil
	}
	sig, ok := signalLookup[name]
	if !ok {
		return nil, fmt.Errorf("invalid signal %q", s)
	}
	return sig, nil
}

// ---------------------------------------------------------------------------
// command line

// options are the command-line switches that are not part of config.
type options struct {
	once    bool
	dry     bool
	version bool
}

// funcVar adapts a setter function to flag.Value.
type funcVar func(string) error

func (f funcVar) Set(s string) error { return f(s) }
func (f funcVar) String() string     { return "" }

// boolFuncVar is funcVar for boolean switches (-flag, -flag=false).
type boolFuncVar func(bool) error

func (f boolFuncVar) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	return f(b)
}
func (f boolFuncVar) String() string   { return "" }
func (f boolFuncVar) IsBoolFlag() bool { return true }

func durationVar(set func(time.Duration)) funcVar {
	return func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		set(d)
		return nil
	}
}

func signalVar(rel release, set func(os.Signal)) funcVar {
	return func(s string) error {
		sig, err := parseSignal(s, rel)
		if err != nil {
			return err
		}
		set(sig)
		return nil
	}
}

// unsupportedVar registers a real consul-template flag that this stand-in
// does not implement, so that using it fails loudly instead of silently.
func unsupportedVar(name string) funcVar {
	return func(string) error {
		return fmt.Errorf("-%s is not supported by the consul-template stand-in (see README.md)", name)
	}
}

// parseFlags parses the command line like consul-template's cli.go: Go flag
// syntax (-flag=value or -flag value), errors returned to the caller which
// prints them and exits with the parse-error status; no usage text except
// for -h/-help.
func parseFlags(args []string, rel release) (*config, options, error) {
	c := defaultConfig(rel)
	var o options

	fs := flag.NewFlagSet("consul-template", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	fs.Var(funcVar(func(s string) error { c.consulAddr = s; return nil }), "consul-addr", "")
	fs.Var(funcVar(func(s string) error { c.consulAuth = s; return nil }), "consul-auth", "")
	fs.Var(boolFuncVar(func(b bool) error { c.retry.enabled = b; return nil }), "consul-retry", "")
	fs.Var(funcVar(func(s string) error {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		c.retry.attempts = int(i)
		return nil
	}), "consul-retry-attempts", "")
	fs.Var(durationVar(func(d time.Duration) { c.retry.backoff = d }), "consul-retry-backoff", "")
	fs.Var(durationVar(func(d time.Duration) { c.retry.maxBackoff = d }), "consul-retry-max-backoff", "")
	// -retry is the older spelling of -consul-retry-backoff, still accepted.
	fs.Var(durationVar(func(d time.Duration) { c.retry.backoff = d }), "retry", "")
	fs.Var(boolFuncVar(func(b bool) error { c.consulSSL = b; return nil }), "consul-ssl", "")
	fs.Var(boolFuncVar(func(b bool) error { c.consulSSLVerify = b; return nil }), "consul-ssl-verify", "")
	fs.Var(funcVar(func(s string) error { c.consulToken, c.consulTokenSet = s, true; return nil }), "consul-token", "")
	fs.BoolVar(&o.dry, "dry", false, "")
	fs.Var(signalVar(rel, func(s os.Signal) { c.killSignal = s }), "kill-signal", "")
	fs.Var(funcVar(func(s string) error { c.logLevel = s; return nil }), "log-level", "")
	fs.Var(durationVar(func(d time.Duration) { c.maxStale = d }), "max-stale", "")
	fs.BoolVar(&o.once, "once", false, "")
	fs.Var(funcVar(func(s string) error { c.pidFile = s; return nil }), "pid-file", "")
	fs.Var(signalVar(rel, func(s os.Signal) { c.reloadSignal = s }), "reload-signal", "")
	fs.Var(funcVar(func(s string) error {
		t, err := parseTemplateSpec(s, rel)
		if err != nil {
			return err
		}
		c.templates = append(c.templates, t)
		return nil
	}), "template", "")
	fs.Var(funcVar(func(s string) error {
		w, err := parseWait(s)
		if err != nil {
			return err
		}
		c.wait = w
		return nil
	}), "wait", "")
	fs.BoolVar(&o.version, "v", false, "")
	fs.BoolVar(&o.version, "version", false, "")

	for _, name := range []string{
		"config", "dedup", "exec", "exec-kill-signal", "exec-kill-timeout",
		"exec-reload-signal", "exec-splay", "syslog", "syslog-facility",
		"vault-addr", "vault-token",
	} {
		fs.Var(unsupportedVar(name), name, "")
	}

	if err := fs.Parse(args); err != nil {
		return nil, o, err
	}
	if rest := fs.Args(); len(rest) > 0 {
		return nil, o, fmt.Errorf("cli: extra args: %q", rest)
	}
	return c, o, nil
}

const usageText = `Usage: consul-template [options]

  TEST-ONLY STAND-IN for HashiCorp consul-template v%s (see README.md).
  Watches a series of templates on the file system, writing new changes when
  Consul is updated. It runs until an interrupt is received unless -once is
  given.

Options:
  -consul-addr=<address>            Consul address (default $CONSUL_HTTP_ADDR
                                    or 127.0.0.1:8500; http:// or https:// ok)
  -consul-auth=<user[:password]>    HTTP basic auth for Consul
  -consul-token=<token>             Consul ACL token (default $CONSUL_TOKEN,
                                    else $CONSUL_HTTP_TOKEN)
  -consul-ssl, -consul-ssl-verify   Use https / verify its certificate
  -consul-retry                     Retry failed Consul requests (default true)
  -consul-retry-attempts=<int>      Retries before giving up (default 12, 0 = forever)
  -consul-retry-backoff=<duration>  Base of the exponential backoff (default 250ms)
  -consul-retry-max-backoff=<dur>   Cap of the backoff (default 1m, 0 = no cap)
  -template=<src:dst[:command]>     Template to render; may be repeated
  -wait=<min[:max]>                 Quiescence timers (max defaults to 4*min)
  -once                             Render once and exit
  -dry                              Print rendered templates to stdout instead
  -log-level=<level>                trace, debug, info, warn (default), err
  -kill-signal=<signal>             Graceful-stop signal (default SIGINT)
  -reload-signal=<signal>           Reload signal (default SIGHUP)
  -max-stale=<duration>             Stale reads allowed up to this old (default
                                    2s; 0 = no stale reads)
  -pid-file=<path>                  Write the process id to this file
  -v, -version                      Print the version and exit
`

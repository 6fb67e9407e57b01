package main

import (
	"encoding/json"
	"os"
	"strings"
	"time"
)

// The "(runner) final config" line. The real tool logs json.Marshal of its
// whole configuration at DEBUG, the Consul token in clear text included
// (v0.19.5 manager/runner.go init, lines 816-821; v0.19.0 lines 749-754):
//
//	result, err := json.Marshal(r.config)
//	log.Printf("[DEBUG] (runner) final config: %s", result)
//
// config.Config has no json tags, so the keys are the Go field names, in
// field order, and ConsulConfig.Token (config/consul.go line 22) is a plain
// *string. These types mirror the fields the stand-in has, in the real order;
// the real line also holds Dedup, Exec, Syslog, Vault and Consul.Transport,
// which the stand-in does not implement.

type finalAuth struct {
	Enabled  bool
	Username string
	Password string
}

type finalRetry struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
	Enabled    bool
}

type finalSSL struct {
	CaCert     string
	CaPath     string
	Cert       string
	Enabled    bool
	Key        string
	ServerName string
	Verify     bool
}

type finalConsul struct {
	Address string
	Auth    finalAuth
	Retry   finalRetry
	SSL     finalSSL
	Token   string
}

type finalWait struct {
	Enabled  bool
	Min, Max time.Duration
}

type finalTemplate struct {
	Command        string
	CommandTimeout time.Duration
	Destination    string
	Source         string
}

type finalConfig struct {
	Consul       finalConsul
	KillSignal   os.Signal
	LogLevel     string
	MaxStale     time.Duration
	PidFile      string
	ReloadSignal os.Signal
	Templates    []finalTemplate
	Wait         finalWait
}

// finalConfigJSON is the configuration as the real "final config" line
// prints it: the token as it is. Like the real init, a marshalling error is
// the runner's error.
func finalConfigJSON(cfg *config) (string, error) {
	user, password, _ := strings.Cut(cfg.consulAuth, ":")
	out := finalConfig{
		Consul: finalConsul{
			Address: cfg.consulAddr,
			Auth:    finalAuth{Enabled: cfg.consulAuth != "", Username: user, Password: password},
			Retry: finalRetry{Attempts: cfg.retry.attempts, Backoff: cfg.retry.backoff,
				MaxBackoff: cfg.retry.maxBackoff, Enabled: cfg.retry.enabled},
			SSL:   finalSSL{Enabled: cfg.consulSSL, Verify: cfg.consulSSLVerify},
			Token: cfg.consulToken,
		},
		KillSignal:   cfg.killSignal,
		LogLevel:     cfg.logLevel,
		MaxStale:     cfg.maxStale,
		PidFile:      cfg.pidFile,
		ReloadSignal: cfg.reloadSignal,
		Templates:    []finalTemplate{},
		Wait:         finalWait{Enabled: cfg.wait.enabled, Min: cfg.wait.min, Max: cfg.wait.max},
	}
	for _, t := range cfg.templates {
		out.Templates = append(out.Templates, finalTemplate{Command: t.Command,
			CommandTimeout: cfg.commandTimeout, Destination: t.Destination, Source: t.Source})
	}
	result, err := json.Marshal(out)
	return string(result), err
}

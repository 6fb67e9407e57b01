package main

// The consul:// backend, as registrator's Consul adapter drives the agent API through
// HashiCorp's Go client (consul/api v1.34): status/leader to ping, agent
// service register/deregister, agent services for -cleanup.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const defaultCheckInterval = "10s"

type consulAdapter struct {
	base   string // http://host:port
	token  string
	client *http.Client
}

// newConsulAdapter follows consul/api's DefaultConfig + NewClient: the address is
// the URI's host, else CONSUL_HTTP_ADDR, else 127.0.0.1:8500; the token is the
// content of CONSUL_HTTP_TOKEN_FILE (read once, here, and winning when not empty),
// else CONSUL_HTTP_TOKEN. The token goes in the X-Consul-Token header.
func newConsulAdapter(uri *url.URL) (*consulAdapter, error) {
	if uri.Scheme != "consul" {
		return nil, fmt.Errorf("%s:// is not supported by the registrator stand-in (only consul://)", uri.Scheme)
	}
	address := "127.0.0.1:8500"
	if env := os.Getenv("CONSUL_HTTP_ADDR"); env != "" {
		address = env
	}
	if uri.Host != "" {
		address = uri.Host
	}
	if scheme, rest, found := strings.Cut(address, "://"); found {
		if scheme != "http" {
			return nil, fmt.Errorf("%s://: only http is supported by the registrator stand-in", scheme)
		}
		address = rest
	}
	token := os.Getenv("CONSUL_HTTP_TOKEN")
	if file := os.Getenv("CONSUL_HTTP_TOKEN_FILE"); file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("consul: failed to create client: Error loading token file: %s", err)
		}
		if t := strings.TrimSpace(string(data)); t != "" {
			token = t
		}
	}
	// Like cleanhttp's pooled transport: no overall timeout on a request.
	transport := &http.Transport{Proxy: nil, IdleConnTimeout: 90 * time.Second}
	return &consulAdapter{base: "http://" + address, token: token, client: &http.Client{Transport: transport}}, nil
}

// statusError is consul/api's error for an answer that is not 200.
func statusError(code int, body []byte) error {
	return fmt.Errorf("Unexpected response code: %d (%s)", code, bytes.TrimSpace(body))
}

func (c *consulAdapter) do(method, path string, in, out interface{}) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("X-Consul-Token", c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// ping asks for the current leader; an empty answer (no leader yet) still counts.
func (c *consulAdapter) ping() error {
	var leader string
	if err := c.do(http.MethodGet, "/v1/status/leader", nil, &leader); err != nil {
		return err
	}
	log.Println("consul: current leader ", leader)
	return nil
}

// agentCheck and agentRegistration are the JSON consul/api sends (AgentServiceCheck,
// AgentServiceRegistration): empty fields left out, except Check/Checks (null).
type agentCheck struct {
	Interval                       string `json:",omitempty"`
	Timeout                        string `json:",omitempty"`
	TTL                            string `json:",omitempty"`
	HTTP                           string `json:",omitempty"`
	Method                         string `json:",omitempty"`
	TCP                            string `json:",omitempty"`
	Status                         string `json:",omitempty"`
	TLSSkipVerify                  bool   `json:",omitempty"`
	DeregisterCriticalServiceAfter string `json:",omitempty"`
}

type agentRegistration struct {
	ID                string            `json:",omitempty"`
	Name              string            `json:",omitempty"`
	Tags              []string          `json:",omitempty"`
	Port              int               `json:",omitempty"`
	Address           string            `json:",omitempty"`
	EnableTagOverride bool              `json:",omitempty"`
	Meta              map[string]string `json:",omitempty"`
	Check             *agentCheck
	Checks            []agentCheck
}

func (c *consulAdapter) register(s *service) error {
	reg := agentRegistration{
		ID:                s.ID,
		Name:              s.Name,
		Tags:              s.Tags,
		Port:              s.Port,
		Address:           s.IP,
		EnableTagOverride: s.Attrs["enable_tag_override"] == "true",
		Meta:              s.Attrs,
		Check:             buildCheck(s),
	}
	return c.do(http.MethodPut, "/v1/agent/service/register", reg, nil)
}

// buildCheck picks the first check kind the metadata names, in the real order
// (http, https, cmd, script, ttl, tcp, grpc); script, cmd and grpc checks are not
// implemented by the stand-in and make no check (logged).
func buildCheck(s *service) *agentCheck {
	a := s.Attrs
	check := &agentCheck{Status: a["check_initial_status"]}
	address := s.IP + ":" + strconv.Itoa(s.Port)
	timed := true
	switch {
	case a["check_http"] != "":
		check.HTTP = "http://" + address + a["check_http"]
		check.Method = a["check_http_method"]
	case a["check_https"] != "":
		check.HTTP = "https://" + address + a["check_https"]
		check.Method = a["check_https_method"]
	case a["check_cmd"] != "", a["check_script"] != "", a["check_grpc"] != "":
		log.Println("registrator stand-in: cmd, script and grpc checks are not implemented; registering", s.ID, "without a check")
		return nil
	case a["check_ttl"] != "":
		check.TTL = a["check_ttl"]
		timed = false
	case a["check_tcp"] != "":
		check.TCP = address
	default:
		return nil
	}
	if timed {
		check.Interval = defaultCheckInterval
		if a["check_interval"] != "" {
			check.Interval = a["check_interval"]
		}
		check.Timeout = a["check_timeout"]
		check.TLSSkipVerify = a["check_tls_skip_verify"] != ""
	}
	check.DeregisterCriticalServiceAfter = a["check_deregister_after"]
	return check
}

func (c *consulAdapter) deregister(s *service) error {
	return c.do(http.MethodPut, "/v1/agent/service/deregister/"+s.ID, nil, nil)
}

// services lists the agent's services (for -cleanup).
func (c *consulAdapter) services() ([]*service, error) {
	var out map[string]struct {
		ID      string
		Service string
		Port    int
		Address string
		Tags    []string
	}
	if err := c.do(http.MethodGet, "/v1/agent/services", nil, &out); err != nil {
		return nil, err
	}
	list := make([]*service, 0, len(out))
	for _, s := range out {
		list = append(list, &service{ID: s.ID, Name: s.Service, Port: s.Port, IP: s.Address, Tags: s.Tags})
	}
	return list, nil
}

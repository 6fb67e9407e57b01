package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// consulClient talks to the Consul HTTP API the way the Consul Go client
// used by consul-template does.
type consulClient struct {
	scheme string
	host   string
	token  string
	auth   *url.Userinfo
	http   *http.Client
}

// newConsulClient accepts "host:port", "http://host:port" or
// "https://host:port"; any other scheme is an error, as in the real client.
func newConsulClient(c *config) (*consulClient, error) {
	addr := c.consulAddr
	if addr == "" {
		addr = defaultConsulAddress
	}
	scheme := "http"
	if c.consulSSL {
		scheme = "https"
	}
	if parts := strings.SplitN(addr, "://", 2); len(parts) == 2 {
		switch parts[0] {
		case "http":
		case "https":
			scheme = "https"
		default:
			return nil, fmt.Errorf("Unknown protocol scheme: %s", parts[0])
		}
		addr = parts[1]
	}
	addr = strings.TrimRight(addr, "/")

	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConnsPerHost: 100,
		TLSHandshakeTimeout: 10 * time.Second,
		// -consul-ssl-verify=false explicitly asks for no verification.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: !c.consulSSLVerify},
	}

	cc := &consulClient{
		scheme: scheme,
		host:   addr,
		token:  c.consulToken,
		// No client timeout: blocking queries legitimately take up to the
		// wait time plus Consul's jitter; requests are cancelled through
		// their context instead.
		http: &http.Client{Transport: transport},
	}
	if c.consulAuth != "" {
		if user, pass, ok := strings.Cut(c.consulAuth, ":"); ok {
			cc.auth = url.UserPassword(user, pass)
		} else {
			cc.auth = url.User(user)
		}
	}
	return cc, nil
}

// queryOptions are what a view sends with each query.
type queryOptions struct {
	index uint64        // blocking query: wait for a change past this index (0: answer now)
	wait  time.Duration // how long Consul may hold a blocking query
	stale bool          // ?stale: any server may answer, however far behind the leader
}

// queryMeta is the part of Consul's response metadata that matters here.
type queryMeta struct {
	index       uint64
	hasIndex    bool
	lastContact time.Duration // X-Consul-LastContact: how far behind the leader the answer may be
}

// parseQueryMeta reads the headers like the Consul API client (api.go
// parseQueryMeta): an unparsable X-Consul-Index gives index 0 and stops
// there (so X-Consul-LastContact is not read: 0); an unparsable
// X-Consul-LastContact gives 0. The client ignores both errors.
func parseQueryMeta(h http.Header) queryMeta {
	var meta queryMeta
	i, err := strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return meta
	}
	meta.index, meta.hasIndex = i, true
	if ms, err := strconv.ParseUint(h.Get("X-Consul-LastContact"), 10, 64); err == nil {
		meta.lastContact = time.Duration(ms) * time.Millisecond
	}
	return meta
}

// get performs a (possibly blocking) GET. found is false for a 404 when
// allow404 is set (a missing KV key); any other non-200 status, 403 (ACL
// denied, or an unknown token) included, is an error that the view retries.
//
// The token goes in the X-Consul-Token header only, never in the URL (api.go
// newRequest / setQueryOptions).
func (c *consulClient) get(ctx context.Context, path string, params url.Values, q queryOptions, allow404 bool) (body []byte, meta queryMeta, found bool, err error) {
	if params == nil {
		params = url.Values{}
	}
	if q.stale {
		params.Set("stale", "")
	}
	if q.index != 0 {
		params.Set("index", strconv.FormatUint(q.index, 10))
	}
	if q.wait != 0 {
		params.Set("wait", strconv.FormatInt(int64(q.wait/time.Millisecond), 10)+"ms")
	}
	u := url.URL{Scheme: c.scheme, Host: c.host, Path: path, RawQuery: params.Encode()}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, meta, false, err
	}
	if c.token != "" {
		req.Header.Set("X-Consul-Token", c.token)
	}
	if c.auth != nil {
		pass, _ := c.auth.Password()
		req.SetBasicAuth(c.auth.Username(), pass)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, meta, false, err
	}
	defer resp.Body.Close()

	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, meta, false, err
	}
	meta = parseQueryMeta(resp.Header)

	switch {
	case resp.StatusCode == http.StatusOK:
		return body, meta, true, nil
	case resp.StatusCode == http.StatusNotFound && allow404:
		return nil, meta, false, nil
	default:
		return nil, meta, false, fmt.Errorf("Unexpected response code: %d (%s)", resp.StatusCode, body)
	}
}

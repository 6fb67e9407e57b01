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
	stale  bool
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
		stale:  c.maxStale > 0,
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

// queryMeta is the part of Consul's response metadata that matters here.
type queryMeta struct {
	index    uint64
	hasIndex bool
}

// get performs a (possibly blocking) GET. With index > 0 Consul holds the
// request until the data's index moves past it or wait expires. found is
// false for a 404 when allow404 is set (a missing KV key); any other
// non-200 status is an error.
func (c *consulClient) get(ctx context.Context, path string, params url.Values, index uint64, wait time.Duration, allow404 bool) (body []byte, meta queryMeta, found bool, err error) {
	if params == nil {
		params = url.Values{}
	}
	if c.stale {
		params.Set("stale", "")
	}
	if index != 0 {
		params.Set("index", strconv.FormatUint(index, 10))
	}
	if wait != 0 {
		params.Set("wait", strconv.FormatInt(int64(wait/time.Millisecond), 10)+"ms")
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

	// The real client silently ignores an unparsable X-Consul-Index and
	// reports index 0 (see view.go for what that leads to).
	if i, perr := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64); perr == nil {
		meta.index, meta.hasIndex = i, true
	}

	switch {
	case resp.StatusCode == http.StatusOK:
		return body, meta, true, nil
	case resp.StatusCode == http.StatusNotFound && allow404:
		return nil, meta, false, nil
	default:
		return nil, meta, false, fmt.Errorf("Unexpected response code: %d (%s)", resp.StatusCode, body)
	}
}

package main

import (
	"reflect"
	"testing"
)

// util.go combineTags/recParseEscapedComma: split on unescaped commas, "\," is a comma,
// empty parts dropped, and the parts come back in reverse order.
func TestSplitTags(t *testing.T) {
	cases := map[string][]string{
		"":       nil,
		"a":      {"a"},
		"a,b,c":  {"c", "b", "a"},
		",a,,b,": {"b", "a"},
		`a\,b,c`: {"c", "a,b"},
		`a\\,b`:  {`a\,b`},
		`x\y`:    {`x\y`},
	}
	for in, want := range cases {
		if got := splitTags(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitTags(%q) = %q, want %q", in, got, want)
		}
	}
	if got := combineTags("a,b", "", "forced", "udp"); !reflect.DeepEqual(got, []string{"b", "a", "forced", "udp"}) {
		t.Errorf("combineTags = %q", got)
	}
}

// util.go serviceMetaData: labels after the environment; port keys win; other ports'
// keys are skipped; protocol and range keys.
func TestServiceMetadataPrecedence(t *testing.T) {
	env := []string{"SERVICE_NAME=env", "SERVICE_TAGS=t", "SERVICE_9090_NAME=other-port", "PATH=/bin", "SERVICE_EMPTY"}
	labels := map[string]string{"SERVICE_NAME": "label", "SERVICE_8080_CHECK_HTTP": "/p", "SERVICE_CHECK_HTTP": "/plain"}
	meta, fromPort := serviceMetadata(env, labels, "8080", "tcp")
	want := map[string]string{"name": "label", "tags": "t", "check_http": "/p"}
	if !reflect.DeepEqual(meta, want) {
		t.Errorf("meta = %v, want %v", meta, want)
	}
	if !fromPort["check_http"] || fromPort["name"] {
		t.Errorf("fromPort = %v", fromPort)
	}
	meta, _ = serviceMetadata([]string{"SERVICE_8080_udp_NAME=u", "SERVICE_8080_tcp_NAME=t"}, nil, "8080", "tcp")
	if meta["name"] != "t" {
		t.Errorf("protocol key: %v", meta)
	}
	meta, _ = serviceMetadata([]string{"SERVICE_8000-8100_IGNORE=1"}, nil, "8080", "tcp")
	if meta["ignore"] != "1" {
		t.Errorf("range key: %v", meta)
	}
	// Outside its range a range key is not skipped: it becomes a plain key, as in the
	// real one (and then Consul Meta).
	meta, _ = serviceMetadata([]string{"SERVICE_8000-8100_IGNORE=1"}, nil, "9000", "tcp")
	if !reflect.DeepEqual(meta, map[string]string{"8000-8100_ignore": "1"}) {
		t.Errorf("range key outside: %v", meta)
	}
}

// consul.go buildCheck: the first kind named wins, interval defaults to 10s, the
// deregister-after setting goes on any check, and no check kind means no check.
func TestBuildCheck(t *testing.T) {
	s := &service{IP: "10.0.0.1", Port: 8080, Attrs: map[string]string{
		"check_http": "/h", "check_tcp": "1", "check_timeout": "2s", "check_deregister_after": "1m",
	}}
	c := buildCheck(s)
	if c.HTTP != "http://10.0.0.1:8080/h" || c.TCP != "" || c.Interval != "10s" || c.Timeout != "2s" || c.DeregisterCriticalServiceAfter != "1m" {
		t.Errorf("check = %+v", c)
	}
	s.Attrs = map[string]string{"check_ttl": "5s", "check_interval": "1s"}
	if c := buildCheck(s); c.TTL != "5s" || c.Interval != "" {
		t.Errorf("ttl check = %+v", c)
	}
	s.Attrs = map[string]string{"check_interval": "1s"}
	if c := buildCheck(s); c != nil {
		t.Errorf("no kind: %+v", c)
	}
}

// bridge.go serviceIDPattern: what -cleanup recognises as registrator-made.
func TestServiceIDPattern(t *testing.T) {
	for id, want := range map[string][]string{
		"host:web:8080":      {"host", "web"},
		"a:b:c:web_1:80:udp": {"a:b:c", "web_1"},
		"web-server1-1":      nil,
		"host:web:http":      nil,
		"host:-bad:80":       nil,
	} {
		m := serviceIDPattern.FindStringSubmatch(id)
		if want == nil {
			if m != nil {
				t.Errorf("%q matched: %q", id, m)
			}
			continue
		}
		if m == nil || m[1] != want[0] || m[2] != want[1] {
			t.Errorf("%q: %q, want %q", id, m, want)
		}
	}
}

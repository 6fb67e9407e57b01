package main

// SERVICE_* metadata: how registrator reads it from a container's environment and
// labels, and how it splits tags.

import (
	"bytes"
	"strconv"
	"strings"
	"text/template"
)

func mapDefault(m map[string]string, key, fallback string) string {
	if v := m[key]; v != "" {
		return v
	}
	return fallback
}

// serviceMetadata reads the SERVICE_* entries for `port` (e.g. "8080") of type
// `proto` ("tcp"/"udp"): environment first, then labels, a later entry replacing an
// earlier one, so a label wins over the same variable in the environment. Keys are
// lower-cased without the prefix ("SERVICE_CHECK_HTTP" -> "check_http"). A
// port-specific entry (SERVICE_<port>_<key>, SERVICE_<port>_<proto>_<key>,
// SERVICE_<low>-<high>_<key>) wins over the plain one whatever their order; entries
// for other ports are skipped. The second result says which keys came from a
// port-specific entry.
func serviceMetadata(env []string, labels map[string]string, port, proto string) (map[string]string, map[string]bool) {
	entries := append([]string{}, env...)
	for k, v := range labels { // Go map order: as random as the real one's
		entries = append(entries, k+"="+v)
	}
	meta := map[string]string{}
	fromPort := map[string]bool{}
	for _, entry := range entries {
		name, value, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(name, "SERVICE_") {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(name, "SERVICE_"))
		if fromPort[key] {
			continue
		}
		head, rest, hasRest := strings.Cut(key, "_")
		if _, err := strconv.Atoi(head); err == nil {
			if head == port && hasRest {
				setPortKey(rest, proto, value, meta, fromPort)
			}
			continue
		}
		if strings.Contains(head, "-") && inRange(head, port) {
			if hasRest {
				setPortKey(rest, proto, value, meta, fromPort)
			}
			continue
		}
		meta[key] = value
	}
	return meta, fromPort
}

// setPortKey stores "<key>" or, for "<proto>_<key>", the key when proto matches.
func setPortKey(rest, proto, value string, meta map[string]string, fromPort map[string]bool) {
	if p, key, ok := strings.Cut(rest, "_"); ok && (p == "tcp" || p == "udp") {
		if p != proto {
			return
		}
		rest = key
	}
	meta[rest] = value
	fromPort[rest] = true
}

func inRange(span, port string) bool {
	lowText, highText, ok := strings.Cut(span, "-")
	low, err1 := strconv.Atoi(lowText)
	high, err2 := strconv.Atoi(highText)
	p, err3 := strconv.Atoi(port)
	return ok && err1 == nil && err2 == nil && err3 == nil && p >= low && p <= high
}

// splitTags splits on commas that are not escaped ("\," is a comma inside a tag),
// drops empty tags, and - as the real splitter does - returns them in REVERSE
// order: "a,b,c" gives c, b, a.
func splitTags(s string) []string {
	var tags []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		case s[i] == ',':
			if cur.Len() > 0 {
				tags = append(tags, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if cur.Len() > 0 {
		tags = append(tags, cur.String())
	}
	for i, j := 0, len(tags)-1; i < j; i, j = i+1, j-1 {
		tags[i], tags[j] = tags[j], tags[i]
	}
	return tags
}

// combineTags: the container's tags, then -tags, then e.g. "udp"; each part split
// (and reversed) on its own.
func combineTags(parts ...string) []string {
	tags := []string{}
	for _, p := range parts {
		tags = append(tags, splitTags(p)...)
	}
	return tags
}

// expandTags runs a tag string as a Go template over the container's inspect data
// (SERVICE_TAGS and -tags both are templates in v9). The stand-in has none of the
// real helper functions (strSlice, sIndex, ...): using one is a template error,
// which skips the service, as any template error does in the real one.
func expandTags(text string, c *container) (string, error) {
	if text == "" {
		return "", nil
	}
	t, err := template.New("tags").Parse(text)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := t.Execute(&out, c.raw); err != nil {
		return "", err
	}
	return out.String(), nil
}

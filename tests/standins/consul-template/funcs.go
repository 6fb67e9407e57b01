package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// now is replaced by tests to get stable timestamps.
var now = func() time.Time { return time.Now().UTC() }

func base64Decode(s string) (string, error) {
	v, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("base64Decode: %w", err)
	}
	return string(v), nil
}

func base64Encode(s string) (string, error) {
	return base64.StdEncoding.EncodeToString([]byte(s)), nil
}

func base64URLDecode(s string) (string, error) {
	v, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("base64URLDecode: %w", err)
	}
	return string(v), nil
}

func base64URLEncode(s string) (string, error) {
	return base64.URLEncoding.EncodeToString([]byte(s)), nil
}

// byTag groups services by tag: {{ range $tag, $svcs := service "web" | byTag }}.
func byTag(v interface{}) (map[string][]interface{}, error) {
	m := map[string][]interface{}{}
	switch typed := v.(type) {
	case nil:
	case []*CatalogSnippet:
		for _, s := range typed {
			for _, t := range s.Tags {
				m[t] = append(m[t], s)
			}
		}
	case []*HealthService:
		for _, s := range typed {
			for _, t := range s.Tags {
				m[t] = append(m[t], s)
			}
		}
	default:
		return nil, fmt.Errorf("byTag: wrong argument type %T", v)
	}
	return m, nil
}

// in reports whether v is an element of the slice/array l, or a substring
// of the string l. Integers match integers and floats match floats
// whatever their width; strings must have the same type.
func in(l, v interface{}) (bool, error) {
	lv := reflect.ValueOf(l)
	vv := reflect.ValueOf(v)
	if !lv.IsValid() || !vv.IsValid() {
		return false, nil
	}
	switch lv.Kind() {
	case reflect.Array, reflect.Slice:
		for i := 0; i < lv.Len(); i++ {
			e := lv.Index(i)
			if e.Kind() == reflect.Interface {
				e = e.Elem()
			}
			if equalScalar(e, vv) {
				return true, nil
			}
		}
	case reflect.String:
		if vv.Type() == lv.Type() && strings.Contains(lv.String(), vv.String()) {
			return true, nil
		}
	}
	return false, nil
}

func equalScalar(e, v reflect.Value) bool {
	if !e.IsValid() {
		return false
	}
	switch {
	case isInt(e) && isInt(v):
		return e.Int() == v.Int()
	case isFloat(e) && isFloat(v):
		return e.Float() == v.Float()
	case e.Kind() == reflect.String:
		return v.Type() == e.Type() && e.String() == v.String()
	}
	return false
}

func isInt(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}

func isUint(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func isFloat(v reflect.Value) bool {
	return v.Kind() == reflect.Float32 || v.Kind() == reflect.Float64
}

// contains is `in` with the arguments swapped, for pipelines:
// {{ if .Tags | contains "primary" }}.
func contains(v, l interface{}) (bool, error) { return in(l, v) }

// containsSomeFunc builds containsAll/Any/None/NotAll. The needles are the
// first argument and, as in the real tool, must be a []interface{} (for
// example from parseJSON); the haystack is piped in.
//
//	containsAll:    retTrue=true,  invert=true
//	containsAny:    retTrue=false, invert=false
//	containsNone:   retTrue=true,  invert=false
//	containsNotAll: retTrue=false, invert=true
func containsSomeFunc(retTrue, invert bool) func([]interface{}, interface{}) (bool, error) {
	return func(needles []interface{}, l interface{}) (bool, error) {
		for _, n := range needles {
			if ok, _ := in(l, n); ok != invert {
				return !retTrue, nil
			}
		}
		return retTrue, nil
	}
}

// loop yields start..stop-1 ({{ range loop 3 }} or {{ range loop 1 4 }}).
func loop(ints ...int64) (<-chan int64, error) {
	var start, stop int64
	switch len(ints) {
	case 1:
		stop = ints[0]
	case 2:
		start, stop = ints[0], ints[1]
	default:
		return nil, fmt.Errorf("loop: wrong number of arguments, expected 1 or 2, but got %d", len(ints))
	}
	// Buffered with the whole range so the producer never outlives an
	// aborted template execution; ranges in templates are small.
	n := stop - start
	if n < 0 {
		n = 0
	}
	if n > 1<<16 {
		n = 1 << 16
	}
	ch := make(chan int64, n)
	go func() {
		defer close(ch)
		for i := start; i < stop; i++ {
			ch <- i
		}
	}()
	return ch, nil
}

// indent prefixes every line of s that is not empty with spaces spaces
// (v0.19.4+, template/funcs.go).
func indent(spaces int, s string) (string, error) {
	prefix := strings.Repeat(" ", spaces)
	var out strings.Builder
	lineStart := true
	for i := 0; i < len(s); i++ {
		if lineStart && s[i] != '\n' {
			out.WriteString(prefix)
		}
		out.WriteByte(s[i])
		lineStart = s[i] == '\n'
	}
	return out.String(), nil
}

func join(sep string, a []string) (string, error) { return strings.Join(a, sep), nil }

// split is strings.Split for pipelines; the input is trimmed first and an
// empty input yields an empty list.
func split(sep, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return []string{}, nil
	}
	return strings.Split(s, sep), nil
}

func replaceAll(from, to, s string) (string, error) { return strings.ReplaceAll(s, from, to), nil }

func regexMatch(re, s string) (bool, error) {
	compiled, err := regexp.Compile(re)
	if err != nil {
		return false, err
	}
	return compiled.MatchString(s), nil
}

func regexReplaceAll(re, repl, s string) (string, error) {
	compiled, err := regexp.Compile(re)
	if err != nil {
		return "", err
	}
	return compiled.ReplaceAllString(s, repl), nil
}

func trimSpace(s string) (string, error) { return strings.TrimSpace(s), nil }
func toLower(s string) (string, error)   { return strings.ToLower(s), nil }
func toUpper(s string) (string, error)   { return strings.ToUpper(s), nil }

// toTitle upper-cases the first letter of every word with the word rules
// of strings.Title, which the real tool uses (deprecated since Go 1.18).
func toTitle(s string) (string, error) {
	prev := ' '
	return strings.Map(func(r rune) rune {
		sep := isWordSeparator(prev)
		prev = r
		if sep {
			return unicode.ToTitle(r)
		}
		return r
	}, s), nil
}

func isWordSeparator(r rune) bool {
	if r <= 0x7F {
		switch {
		case '0' <= r && r <= '9', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', r == '_':
			return false
		}
		return true
	}
	if unicode.IsLetter(r) || unicode.IsDigit(r) {
		return false
	}
	return unicode.IsSpace(r)
}

// timestamp returns the current UTC time as RFC 3339, in the given Go
// layout, or as Unix seconds for "unix".
func timestamp(s ...string) (string, error) {
	switch len(s) {
	case 0:
		return now().Format(time.RFC3339), nil
	case 1:
		if s[0] == "unix" {
			return strconv.FormatInt(now().Unix(), 10), nil
		}
		return now().Format(s[0]), nil
	default:
		return "", fmt.Errorf("timestamp: wrong number of arguments, expected 0 or 1, but got %d", len(s))
	}
}

func toJSON(v interface{}) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toJSON: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func toJSONPretty(m map[string]interface{}) (string, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", fmt.Errorf("toJSONPretty: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// The parse* helpers treat "" as the zero value.

func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("parseBool: %w", err)
	}
	return v, nil
}

func parseFloat(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("parseFloat: %w", err)
	}
	return v, nil
}

func parseInt(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parseInt: %w", err)
	}
	return v, nil
}

func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parseUint: %w", err)
	}
	return v, nil
}

func parseJSON(s string) (interface{}, error) {
	if s == "" {
		return map[string]interface{}{}, nil
	}
	var v interface{}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	return v, nil
}

// mathFunc returns add/subtract/multiply/divide/modulo. Arguments are
// (b, a) so that pipelines read naturally: {{ 10 | subtract 3 }} is 10-3.
// Any float operand gives a float64, two unsigned operands a uint64,
// anything else an int64.
func mathFunc(op string) func(b, a interface{}) (interface{}, error) {
	return func(b, a interface{}) (interface{}, error) {
		av, bv := reflect.ValueOf(a), reflect.ValueOf(b)
		if !isNumber(av) || (op == "modulo" && isFloat(av)) {
			return nil, fmt.Errorf("%s: unknown type for %q (%T)", op, fmt.Sprint(a), a)
		}
		if !isNumber(bv) || (op == "modulo" && isFloat(bv)) {
			return nil, fmt.Errorf("%s: unknown type for %q (%T)", op, fmt.Sprint(b), b)
		}
		switch {
		case isFloat(av) || isFloat(bv):
			x, y := toFloat(av), toFloat(bv)
			switch op {
			case "add":
				return x + y, nil
			case "subtract":
				return x - y, nil
			case "multiply":
				return x * y, nil
			default:
				return x / y, nil
			}
		case isUint(av) && isUint(bv):
			x, y := av.Uint(), bv.Uint()
			if (op == "divide" || op == "modulo") && y == 0 {
				return nil, fmt.Errorf("%s: division by zero", op)
			}
			switch op {
			case "add":
				return x + y, nil
			case "subtract":
				return x - y, nil
			case "multiply":
				return x * y, nil
			case "divide":
				return x / y, nil
			default:
				return x % y, nil
			}
		default:
			x, y := toInt(av), toInt(bv)
			if (op == "divide" || op == "modulo") && y == 0 {
				return nil, fmt.Errorf("%s: division by zero", op)
			}
			switch op {
			case "add":
				return x + y, nil
			case "subtract":
				return x - y, nil
			case "multiply":
				return x * y, nil
			case "divide":
				return x / y, nil
			default:
				return x % y, nil
			}
		}
	}
}

func isNumber(v reflect.Value) bool { return isInt(v) || isUint(v) || isFloat(v) }

func toFloat(v reflect.Value) float64 {
	switch {
	case isInt(v):
		return float64(v.Int())
	case isUint(v):
		return float64(v.Uint())
	}
	return v.Float()
}

func toInt(v reflect.Value) int64 {
	if isUint(v) {
		return int64(v.Uint())
	}
	return v.Int()
}

// Scratch is the per-render scratch pad returned by {{ scratch }}.
type Scratch struct {
	mu     sync.RWMutex
	values map[string]interface{}
}

// Key reports whether k is set.
func (s *Scratch) Key(k string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.values[k]
	return ok
}

// Get returns the value of k (nil if unset).
func (s *Scratch) Get(k string) interface{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.values[k]
}

// Set stores v under k.
func (s *Scratch) Set(k string, v interface{}) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.values[k] = v
	return ""
}

// SetX stores v under k unless k is already set.
func (s *Scratch) SetX(k string, v interface{}) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = v
	}
	return ""
}

// MapSet stores v under mk in the map named k.
func (s *Scratch) MapSet(k, mk string, v interface{}) (string, error) {
	return s.mapSet(k, mk, v, true)
}

// MapSetX is MapSet that does not overwrite.
func (s *Scratch) MapSetX(k, mk string, v interface{}) (string, error) {
	return s.mapSet(k, mk, v, false)
}

func (s *Scratch) mapSet(k, mk string, v interface{}, overwrite bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if _, ok := s.values[k]; !ok {
		s.values[k] = map[string]interface{}{}
	}
	m, ok := s.values[k].(map[string]interface{})
	if !ok {
		return "", fmt.Errorf("%q is not a map", k)
	}
	if _, exists := m[mk]; overwrite || !exists {
		m[mk] = v
	}
	return "", nil
}

// MapValues returns the values of the map named k, ordered by key.
func (s *Scratch) MapValues(k string) ([]interface{}, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.values[k].(map[string]interface{})
	if !ok {
		return nil, nil
	}
	keys := make([]string, 0, len(m))
	for mk := range m {
		keys = append(keys, mk)
	}
	sort.Strings(keys)
	out := make([]interface{}, len(keys))
	for i, mk := range keys {
		out[i] = m[mk]
	}
	return out, nil
}

func (s *Scratch) init() {
	if s.values == nil {
		s.values = map[string]interface{}{}
	}
}

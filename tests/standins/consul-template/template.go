package main

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// tmpl is a template source file, read once when the runner is created
// (and again on reload).
type tmpl struct {
	id       string // hash of the contents: identical templates are one
	source   string
	contents string
}

func newTmpl(source string) (*tmpl, error) {
	b, err := os.ReadFile(source)
	if err != nil {
		return nil, fmt.Errorf("failed to read template: %w", err)
	}
	sum := md5.Sum(b)
	return &tmpl{id: hex.EncodeToString(sum[:]), source: source, contents: string(b)}, nil
}

// brain caches the last data received for each dependency.
type brain struct {
	data map[string]interface{}
}

func newBrain() *brain { return &brain{data: map[string]interface{}{}} }

func (b *brain) remember(d dependency, v interface{}) { b.data[d.String()] = v }
func (b *brain) forget(d dependency)                  { delete(b.data, d.String()) }

func (b *brain) recall(d dependency) (interface{}, bool) {
	v, ok := b.data[d.String()]
	return v, ok
}

// depSet is an insertion-ordered set of dependencies.
type depSet struct {
	list []dependency
	seen map[string]bool
}

func newDepSet() *depSet { return &depSet{seen: map[string]bool{}} }

func (s *depSet) add(d dependency) {
	if !s.seen[d.String()] {
		s.seen[d.String()] = true
		s.list = append(s.list, d)
	}
}

func (s *depSet) len() int { return len(s.list) }

// execResult is the outcome of one evaluation of a template.
type execResult struct {
	used    *depSet // every dependency the template asked for
	missing *depSet // those without data yet: the output is not usable
	output  []byte
}

// execute evaluates the template against the brain. This is also how
// dependencies are discovered: a function whose data is not in the brain
// records the dependency as missing and returns an empty value, so the
// runner knows what to fetch before the next pass (templates such as
// `range services` -> `service .Name` need several passes).
func (t *tmpl) execute(b *brain, env []string, rel release) (*execResult, error) {
	res := &execResult{used: newDepSet(), missing: newDepSet()}

	tpl := template.New("")
	tpl.Funcs(funcMap(tpl, b, env, rel, res.used, res.missing))
	if rel.missingKeyZero {
		// template/template.go (v0.19.1+, error_on_missing_key unset): a
		// missing map key gives the element type's zero value, not the
		// default "<no value>".
		tpl.Option("missingkey=zero")
	}
	if _, err := tpl.Parse(t.contents); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, nil); err != nil {
		return nil, fmt.Errorf("execute: %w", err)
	}
	res.output = buf.Bytes()
	return res, nil
}

// funcMap returns the template functions bound to one evaluation.
func funcMap(tpl *template.Template, b *brain, env []string, rel release, used, missing *depSet) template.FuncMap {
	var scratch Scratch
	funcs := template.FuncMap{
		// Consul data
		"key":          keyFunc(b, used, missing),
		"keyExists":    keyExistsFunc(b, used, missing),
		"keyOrDefault": keyOrDefaultFunc(b, used, missing),
		"service":      serviceFunc(b, rel, used, missing),
		"services":     servicesFunc(b, used, missing),

		"scratch": func() *Scratch { return &scratch },

		// helpers
		"base64Decode":    base64Decode,
		"base64Encode":    base64Encode,
		"base64URLDecode": base64URLDecode,
		"base64URLEncode": base64URLEncode,
		"byTag":           byTag,
		"contains":        contains,
		"containsAll":     containsSomeFunc(true, true),
		"containsAny":     containsSomeFunc(false, false),
		"containsNone":    containsSomeFunc(true, false),
		"containsNotAll":  containsSomeFunc(false, true),
		"env":             envFunc(env),
		"executeTemplate": executeTemplateFunc(tpl),
		"in":              in,
		"join":            join,
		"loop":            loop,
		"parseBool":       parseBool,
		"parseFloat":      parseFloat,
		"parseInt":        parseInt,
		"parseJSON":       parseJSON,
		"parseUint":       parseUint,
		"regexMatch":      regexMatch,
		"regexReplaceAll": regexReplaceAll,
		"replaceAll":      replaceAll,
		"split":           split,
		"timestamp":       timestamp,
		"toJSON":          toJSON,
		"toJSONPretty":    toJSONPretty,
		"toLower":         toLower,
		"toTitle":         toTitle,
		"toUpper":         toUpper,
		"trimSpace":       trimSpace,

		// math
		"add":      mathFunc("add"),
		"subtract": mathFunc("subtract"),
		"multiply": mathFunc("multiply"),
		"divide":   mathFunc("divide"),
		"modulo":   mathFunc("modulo"),
	}
	if rel.indentFunc {
		funcs["indent"] = indent
	}
	return funcs
}

// servicesFunc implements {{ services ["@dc"] }}.
func servicesFunc(b *brain, used, missing *depSet) func(...string) ([]*CatalogSnippet, error) {
	return func(s ...string) ([]*CatalogSnippet, error) {
		d, err := newCatalogServicesQuery(strings.Join(s, ""))
		if err != nil {
			return nil, err
		}
		used.add(d)
		if v, ok := b.recall(d); ok {
			return v.([]*CatalogSnippet), nil
		}
		missing.add(d)
		return []*CatalogSnippet{}, nil
	}
}

// serviceFunc implements {{ service "tag.name@dc~near|filter" }}; extra
// arguments are joined with "|", so `service "web" "any"` is "web|any".
func serviceFunc(b *brain, rel release, used, missing *depSet) func(...string) ([]*HealthService, error) {
	return func(s ...string) ([]*HealthService, error) {
		if len(s) == 0 || s[0] == "" {
			return []*HealthService{}, nil
		}
		d, err := newHealthServiceQuery(strings.Join(s, "|"), rel)
		if err != nil {
			return nil, err
		}
		used.add(d)
		if v, ok := b.recall(d); ok {
			return v.([]*HealthService), nil
		}
		missing.add(d)
		return []*HealthService{}, nil
	}
}

// keyFunc implements {{ key "path" }}: the template is not rendered until
// the key exists.
func keyFunc(b *brain, used, missing *depSet) func(string) (string, error) {
	return func(s string) (string, error) {
		if s == "" {
			return "", nil
		}
		d, err := newKVGetQuery(s)
		if err != nil {
			return "", err
		}
		d.block = true
		used.add(d)
		if v, ok := b.recall(d); ok {
			if v == nil {
				return "", nil
			}
			return v.(string), nil
		}
		missing.add(d)
		return "", nil
	}
}

// keyExistsFunc implements {{ keyExists "path" }}.
func keyExistsFunc(b *brain, used, missing *depSet) func(string) (bool, error) {
	return func(s string) (bool, error) {
		if s == "" {
			return false, nil
		}
		d, err := newKVGetQuery(s)
		if err != nil {
			return false, err
		}
		used.add(d)
		if v, ok := b.recall(d); ok {
			return v != nil, nil
		}
		missing.add(d)
		return false, nil
	}
}

// keyOrDefaultFunc implements {{ keyOrDefault "path" "default" }}: a
// missing (or empty) key yields the default instead of blocking.
func keyOrDefaultFunc(b *brain, used, missing *depSet) func(string, string) (string, error) {
	return func(s, def string) (string, error) {
		if s == "" {
			return def, nil
		}
		d, err := newKVGetQuery(s)
		if err != nil {
			return "", err
		}
		used.add(d)
		if v, ok := b.recall(d); ok {
			if v == nil || v.(string) == "" {
				return def, nil
			}
			return v.(string), nil
		}
		missing.add(d)
		return def, nil
	}
}

// envFunc implements {{ env "NAME" }}; the variables consul-template
// exports to commands (CONSUL_HTTP_ADDR, ...) take precedence.
func envFunc(env []string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, e := range env {
			if k, v, ok := strings.Cut(e, "="); ok && k == s {
				return v, nil
			}
		}
		return os.Getenv(s), nil
	}
}

// executeTemplateFunc implements {{ executeTemplate "name" [dot] }}.
func executeTemplateFunc(t *template.Template) func(string, ...interface{}) (string, error) {
	return func(name string, data ...interface{}) (string, error) {
		var dot interface{}
		switch len(data) {
		case 0:
		case 1:
			dot = data[0]
		default:
			return "", fmt.Errorf("executeTemplate: wrong number of arguments, expected 1 or 2, but got %d", len(data)+1)
		}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, dot); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
}

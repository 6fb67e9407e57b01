package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// dependency is one piece of Consul data a template needs. Its String() is
// its identity: two template calls that produce the same string share one
// watch and one cached value, exactly as in consul-template.
type dependency interface {
	String() string
	// fetch performs one (blocking) query. data must be comparable with
	// reflect.DeepEqual so unchanged results can be ignored.
	fetch(ctx context.Context, c *consulClient, q queryOptions) (data interface{}, meta queryMeta, err error)
	// blockOnNil reports whether a nil result counts as "no data yet"
	// (the `key` function waits for the key to exist).
	blockOnNil() bool
}

// Grammar of the query strings accepted by services/service/key:
// "<TAG>.<NAME>@<DATACENTER>~<NEAR>|<FILTER>", "<KEY>@<DATACENTER>".
const (
	dcExpr     = `(@(?P<dc>[\w.\-]+))?`
	keyExpr    = `/?(?P<key>[^@]+)`
	filterExpr = `(\|(?P<filter>[\w,]+))?`
	nameExpr   = `(?P<name>[\w\-]+)`
	nearExpr   = `(~(?P<near>[\w.\-]+))?`
	tagExpr    = `((?P<tag>[\w.\-]+)\.)?`
)

var (
	catalogServicesRe = regexp.MustCompile(`\A` + dcExpr + `\z`)
	healthServiceRe   = regexp.MustCompile(`\A` + tagExpr + nameExpr + dcExpr + nearExpr + filterExpr + `\z`)
	kvGetRe           = regexp.MustCompile(`\A` + keyExpr + dcExpr + `\z`)
)

// namedGroups returns the named submatches of re in s.
func namedGroups(re *regexp.Regexp, s string) map[string]string {
	m := map[string]string{}
	match := re.FindStringSubmatch(s)
	if match == nil {
		return m
	}
	for i, name := range re.SubexpNames() {
		if name != "" {
			m[name] = match[i]
		}
	}
	return m
}

// sortedTags returns a sorted copy (the real tool sorts tags too).
func sortedTags(tags []string) ServiceTags {
	out := make(ServiceTags, len(tags))
	copy(out, tags)
	sort.Strings(out)
	return out
}

// ServiceTags is the list of tags of a service.
type ServiceTags []string

// ---------------------------------------------------------------------------
// services: GET /v1/catalog/services

// CatalogSnippet is one element of `services`.
type CatalogSnippet struct {
	Name string
	Tags ServiceTags
}

type catalogServicesQuery struct {
	dc string
}

func newCatalogServicesQuery(s string) (*catalogServicesQuery, error) {
	if !catalogServicesRe.MatchString(s) {
		return nil, fmt.Errorf("catalog.services: invalid format: %q", s)
	}
	return &catalogServicesQuery{dc: namedGroups(catalogServicesRe, s)["dc"]}, nil
}

func (d *catalogServicesQuery) String() string {
	if d.dc != "" {
		return fmt.Sprintf("catalog.services(@%s)", d.dc)
	}
	return "catalog.services"
}

func (d *catalogServicesQuery) blockOnNil() bool { return false }

func (d *catalogServicesQuery) fetch(ctx context.Context, c *consulClient, q queryOptions) (interface{}, queryMeta, error) {
	params := url.Values{}
	if d.dc != "" {
		params.Set("dc", d.dc)
	}
	body, meta, _, err := c.get(ctx, "/v1/catalog/services", params, q, false)
	if err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}
	var entries map[string][]string
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}
	list := make([]*CatalogSnippet, 0, len(entries))
	for name, tags := range entries {
		list = append(list, &CatalogSnippet{Name: name, Tags: sortedTags(tags)})
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, meta, nil
}

// ---------------------------------------------------------------------------
// service: GET /v1/health/service/<name>

// Health states and the special maintenance check ids.
const (
	healthAny         = "any"
	healthPassing     = "passing"
	healthWarning     = "warning"
	healthCritical    = "critical"
	healthMaintenance = "maintenance"

	nodeMaintCheckID          = "_node_maintenance"
	serviceMaintCheckIDPrefix = "_service_maintenance:"
)

// HealthCheck is one health check of a service instance.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
}

// HealthService is one element of `service`. The fields are those of
// consul-template v0.19.0 (ServiceMeta only arrived in v0.20.0).
type HealthService struct {
	Node                string
	NodeID              string
	NodeAddress         string
	NodeTaggedAddresses map[string]string
	NodeMeta            map[string]string
	Address             string
	ID                  string
	Name                string
	Tags                ServiceTags
	Checks              []*HealthCheck
	Status              string
	Port                int
}

type healthServiceQuery struct {
	name    string
	tag     string
	dc      string
	near    string
	filters []string

	// nearKeepsOrder: with ~near, keep Consul's order (v0.19.4+, see release).
	nearKeepsOrder bool
}

func newHealthServiceQuery(s string, rel release) (*healthServiceQuery, error) {
	if !healthServiceRe.MatchString(s) {
		return nil, fmt.Errorf("health.service: invalid format: %q", s)
	}
	m := namedGroups(healthServiceRe, s)

	var filters []string
	if f := m["filter"]; f != "" {
		for _, part := range strings.Split(f, ",") {
			part = strings.TrimSpace(part)
			switch part {
			case healthAny, healthPassing, healthWarning, healthCritical, healthMaintenance:
				filters = append(filters, part)
			case "":
			default:
				return nil, fmt.Errorf("health.service: invalid filter: %q in %q", part, s)
			}
		}
		sort.Strings(filters)
	} else {
		// No filter means "healthy instances only".
		filters = []string{healthPassing}
	}
	return &healthServiceQuery{
		name:           m["name"],
		tag:            m["tag"],
		dc:             m["dc"],
		near:           m["near"],
		filters:        filters,
		nearKeepsOrder: rel.nearKeepsOrder,
	}, nil
}

func (d *healthServiceQuery) String() string {
	name := d.name
	if d.tag != "" {
		name = d.tag + "." + name
	}
	if d.dc != "" {
		name += "@" + d.dc
	}
	if d.near != "" {
		name += "~" + d.near
	}
	if len(d.filters) > 0 {
		name += "|" + strings.Join(d.filters, ",")
	}
	return fmt.Sprintf("health.service(%s)", name)
}

func (d *healthServiceQuery) blockOnNil() bool { return false }

// passingOnly reports whether Consul can do the filtering (?passing);
// any other filter is applied client side on the aggregated status.
func (d *healthServiceQuery) passingOnly() bool {
	return len(d.filters) == 1 && d.filters[0] == healthPassing
}

func (d *healthServiceQuery) accepts(status string) bool {
	for _, f := range d.filters {
		if f == healthAny || f == status {
			return true
		}
	}
	return false
}

// healthEntry is the JSON shape of /v1/health/service/<name>.
type healthEntry struct {
	Node struct {
		ID              string
		Node            string
		Address         string
		TaggedAddresses map[string]string
		Meta            map[string]string
	}
	Service struct {
		ID      string
		Service string
		Tags    []string
		Address string
		Port    int
	}
	Checks []*HealthCheck
}

// aggregatedStatus folds the checks of one instance into a single status:
// maintenance beats critical beats warning beats passing; an unknown check
// status yields "" (matched only by "any").
func aggregatedStatus(checks []*HealthCheck) string {
	var warning, critical, maintenance bool
	for _, c := range checks {
		if c.CheckID == nodeMaintCheckID || strings.HasPrefix(c.CheckID, serviceMaintCheckIDPrefix) {
			maintenance = true
			continue
		}
		switch c.Status {
		case healthPassing:
		case healthWarning:
			warning = true
		case healthCritical:
			critical = true
		default:
			return ""
		}
	}
	switch {
	case maintenance:
		return healthMaintenance
	case critical:
		return healthCritical
	case warning:
		return healthWarning
	default:
		return healthPassing
	}
}

func (d *healthServiceQuery) fetch(ctx context.Context, c *consulClient, q queryOptions) (interface{}, queryMeta, error) {
	params := url.Values{}
	if d.dc != "" {
		params.Set("dc", d.dc)
	}
	if d.near != "" {
		params.Set("near", d.near)
	}
	if d.tag != "" {
		params.Set("tag", d.tag)
	}
	if d.passingOnly() {
		params.Set("passing", "1")
	}
	body, meta, _, err := c.get(ctx, "/v1/health/service/"+d.name, params, q, false)
	if err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}
	var entries []healthEntry
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}

	list := make([]*HealthService, 0, len(entries))
	for _, e := range entries {
		status := aggregatedStatus(e.Checks)
		if !d.accepts(status) {
			continue
		}
		address := e.Service.Address
		if address == "" {
			address = e.Node.Address
		}
		list = append(list, &HealthService{
			Node:                e.Node.Node,
			NodeID:              e.Node.ID,
			NodeAddress:         e.Node.Address,
			NodeTaggedAddresses: e.Node.TaggedAddresses,
			NodeMeta:            e.Node.Meta,
			Address:             address,
			ID:                  e.Service.ID,
			Name:                e.Service.Service,
			Tags:                sortedTags(e.Service.Tags),
			Checks:              e.Checks,
			Status:              status,
			Port:                e.Service.Port,
		})
	}
	// Sorted by node name, then service id. v0.19.0 sorts even with ~near,
	// discarding Consul's RTT order; v0.19.4+ does not sort then (GH-1027).
	if d.near != "" && d.nearKeepsOrder {
		return list, meta, nil
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Node != list[j].Node {
			return list[i].Node < list[j].Node
		}
		return list[i].ID < list[j].ID
	})
	return list, meta, nil
}

// ---------------------------------------------------------------------------
// key / keyOrDefault / keyExists: GET /v1/kv/<key>

type kvGetQuery struct {
	key   string
	dc    string
	block bool
}

func newKVGetQuery(s string) (*kvGetQuery, error) {
	if s != "" && !kvGetRe.MatchString(s) {
		return nil, fmt.Errorf("kv.get: invalid format: %q", s)
	}
	m := namedGroups(kvGetRe, s)
	return &kvGetQuery{key: m["key"], dc: m["dc"]}, nil
}

func (d *kvGetQuery) String() string {
	key := d.key
	if d.dc != "" {
		key += "@" + d.dc
	}
	if d.block {
		return fmt.Sprintf("kv.block(%s)", key)
	}
	return fmt.Sprintf("kv.get(%s)", key)
}

func (d *kvGetQuery) blockOnNil() bool { return d.block }

// fetch returns the value as a string, or nil when the key does not exist.
func (d *kvGetQuery) fetch(ctx context.Context, c *consulClient, q queryOptions) (interface{}, queryMeta, error) {
	params := url.Values{}
	if d.dc != "" {
		params.Set("dc", d.dc)
	}
	body, meta, found, err := c.get(ctx, "/v1/kv/"+d.key, params, q, true)
	if err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}
	if !found {
		return nil, meta, nil
	}
	var pairs []struct {
		Key   string
		Value []byte // base64 in JSON
	}
	if err := json.Unmarshal(body, &pairs); err != nil {
		return nil, meta, fmt.Errorf("%s: %w", d, err)
	}
	if len(pairs) == 0 {
		return nil, meta, nil
	}
	return string(pairs[0].Value), meta, nil
}

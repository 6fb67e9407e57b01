package main

// The bridge between Docker and the registry, as registrator's internal/bridge
// package has it: which containers and ports become services, their IDs, names,
// addresses and tags, and what a sync, a resync with -cleanup, a start and a die do.

import (
	"errors"
	"log"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// service is one registration: a container's port.
type service struct {
	ID    string
	Name  string
	Port  int
	IP    string
	Tags  []string
	Attrs map[string]string
	TTL   int

	origin servicePort
}

// servicePort is one port of a container and where it is reachable.
type servicePort struct {
	HostPort    string
	HostIP      string
	ExposedPort string
	ExposedIP   string
	PortType    string
	container   *container
}

type deadContainer struct {
	TTL      int
	Services []*service
}

type bridge struct {
	sync.Mutex
	docker   *dockerClient
	registry *consulAdapter
	opts     *options
	services map[string][]*service
	dead     map[string]*deadContainer
}

// hostname is the machine's name as registrator sees it (its container's hostname:
// the host's with --net=host); it starts every service ID.
var hostname, _ = os.Hostname()

// serviceIDPattern matches the IDs registrator makes: host:container:port[:udp].
var serviceIDPattern = regexp.MustCompile(`^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$`)

func newBridge(docker *dockerClient, uri string, o *options) (*bridge, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, errors.New("bad adapter uri: " + uri)
	}
	switch u.Scheme {
	case "consul", "consul-tls", "consul-unix":
	default:
		return nil, errors.New("unrecognized adapter: " + uri)
	}
	log.Println("Using", u.Scheme, "adapter:", u)
	registry, err := newConsulAdapter(u)
	if err != nil {
		return nil, err
	}
	return &bridge{
		docker:   docker,
		registry: registry,
		opts:     o,
		services: map[string][]*service{},
		dead:     map[string]*deadContainer{},
	}, nil
}

// add registers a started container's services (a "start" event).
func (b *bridge) add(id string) {
	b.Lock()
	defer b.Unlock()
	b.addLocked(id, false)
}

// refresh is the -ttl-refresh tick: the Consul backend has no TTL to refresh.
func (b *bridge) refresh() {
	b.Lock()
	defer b.Unlock()
	for id, d := range b.dead {
		d.TTL -= b.opts.refreshInterval
		if d.TTL <= 0 {
			delete(b.dead, id)
		}
	}
	for id, services := range b.services {
		for _, s := range services {
			log.Println("refreshed:", short(id), s.ID)
		}
	}
}

// sync registers every running container and re-registers the services already
// known (at start, quiet=false: a failure to list containers is fatal; on -resync,
// quiet=true). With -cleanup it then drops the services of containers that are no
// longer there, and deregisters this host's registrator-made services that no
// running container accounts for.
func (b *bridge) sync(quiet bool) {
	b.Lock()
	defer b.Unlock()
	running, err := b.docker.listContainers(nil)
	if err != nil {
		if quiet {
			log.Println("error listing containers, skipping sync")
			return
		}
		log.Fatal(err)
	}
	log.Printf("Syncing services on %d containers", len(running))
	for _, c := range running {
		known := b.services[c.ID]
		if known == nil {
			b.addLocked(c.ID, quiet)
			continue
		}
		for _, s := range known {
			if err := b.registry.register(s); err != nil {
				log.Println("sync register failed:", s, err)
			}
		}
	}
	if b.opts.cleanup {
		b.cleanupLocked()
	}
}

func (b *bridge) cleanupLocked() {
	log.Println("Listing non-exited containers")
	alive, err := b.docker.listContainers(map[string][]string{"status": {"created", "restarting", "running", "paused"}})
	if err != nil {
		log.Println("error listing nonExitedContainers, skipping sync", err)
		return
	}
	isAlive := map[string]bool{}
	for _, c := range alive {
		isAlive[c.ID] = true
	}
	for id := range b.services {
		if !isAlive[id] {
			log.Printf("stale: Removing service %s because it does not exist", id)
			go b.removeOnExit(id)
		}
	}
	log.Println("Cleaning up dangling services")
	registered, err := b.registry.services()
	if err != nil {
		log.Println("cleanup failed:", err)
		return
	}
	for _, s := range registered {
		m := serviceIDPattern.FindStringSubmatch(s.ID)
		if len(m) != 3 || m[1] != hostname || b.accountedFor(s.Name, m[2]) {
			continue
		}
		log.Println("dangling:", s.ID)
		if err := b.registry.deregister(s); err != nil {
			log.Println("deregister failed:", s.ID, err)
			continue
		}
		log.Println(s.ID, "removed")
	}
}

// accountedFor: a known service of that name on a container of that name (the
// port is not compared).
func (b *bridge) accountedFor(name, containerName string) bool {
	for _, services := range b.services {
		for _, s := range services {
			if s.Name == name && s.origin.container.Name[1:] == containerName {
				return true
			}
		}
	}
	return false
}

func (b *bridge) addLocked(id string, quiet bool) {
	if d := b.dead[id]; d != nil {
		b.services[id] = d.Services
		delete(b.dead, id)
	}
	if b.services[id] != nil {
		log.Println("container, ", short(id), ", already exists, ignoring")
		return
	}
	c, err := b.docker.inspect(id)
	if err != nil {
		log.Println("unable to inspect container:", short(id), err)
		return
	}
	ports := containerPorts(c)
	if len(ports) == 0 && !quiet {
		log.Println("ignored:", short(c.ID), "no published ports")
		return
	}
	published := map[string]servicePort{}
	for key, p := range ports {
		if !b.opts.internal && p.HostPort == "" {
			if !quiet {
				log.Println("ignored:", short(c.ID), "port", p.ExposedPort, "not published on host")
			}
			continue
		}
		published[key] = p
	}
	group := len(published) > 1
	for _, p := range published {
		s, err := b.newService(p, group)
		if err != nil {
			log.Println("ignored:", short(c.ID), "service on port", p.ExposedPort, err)
			continue
		}
		if s == nil {
			if !quiet {
				log.Println("ignored:", short(c.ID), "service on port", p.ExposedPort)
			}
			continue
		}
		if err := b.registry.register(s); err != nil {
			log.Println("register failed:", s, err)
			continue
		}
		b.services[c.ID] = append(b.services[c.ID], s)
		log.Println("added:", short(c.ID), s.ID)
	}
}

// containerPorts: the exposed ports (published on the same port of the host, which
// is what they are under --net=host), then the runtime port map over them.
func containerPorts(c *container) map[string]servicePort {
	ports := map[string]servicePort{}
	for p := range c.Config.ExposedPorts {
		number := strings.SplitN(p, "/", 2)[0]
		ports[p] = newServicePort(c, p, []portBinding{{HostIP: "0.0.0.0", HostPort: number}})
	}
	for p, bindings := range c.NetworkSettings.Ports {
		ports[p] = newServicePort(c, p, bindings)
	}
	return ports
}

func newServicePort(c *container, port string, bindings []portBinding) servicePort {
	sp := servicePort{HostIP: "0.0.0.0", PortType: "tcp", container: c}
	if len(bindings) > 0 {
		sp.HostPort = bindings[0].HostPort
		if bindings[0].HostIP != "" {
			sp.HostIP = bindings[0].HostIP
		}
	}
	if mode := c.HostConfig.NetworkMode; mode != "bridge" && mode != "default" && mode != "host" {
		sp.HostIP = c.NetworkSettings.Networks[mode].IPAddress
	}
	parts := strings.Split(port, "/")
	sp.ExposedPort = parts[0]
	if len(parts) == 2 {
		sp.PortType = parts[1]
	}
	sp.ExposedIP = c.NetworkSettings.IPAddress
	if sp.ExposedIP == "" {
		for _, n := range c.NetworkSettings.Networks { // map order: any network's
			sp.ExposedIP = n.IPAddress
		}
	}
	return sp
}

// newService turns a port into a service, or nil when it is to be ignored.
func (b *bridge) newService(p servicePort, group bool) (*service, error) {
	c := p.container
	defaultName := strings.Split(path.Base(c.Config.Image), ":")[0]

	host := hostname
	if host == "" {
		host = p.HostIP
	}
	if p.HostIP == "0.0.0.0" {
		// The address of the machine's name, as its resolver answers (/etc/hosts
		// first): on many hosts 127.0.1.1 or a Docker bridge address. Use -ip.
		if ip, err := net.ResolveIPAddr("ip", host); err == nil {
			p.HostIP = ip.String()
		}
	}
	if b.opts.hostIP != "" {
		p.HostIP = b.opts.hostIP
	}

	meta, fromPort := serviceMetadata(c.Config.Env, c.Config.Labels, p.ExposedPort, p.PortType)
	if mapDefault(meta, "ignore", "") != "" {
		return nil, nil
	}
	name := mapDefault(meta, "name", "")
	if name == "" {
		if b.opts.explicit {
			return nil, nil
		}
		name = defaultName
	}

	s := &service{origin: p, Name: name}
	s.ID = host + ":" + c.Name[1:] + ":" + p.ExposedPort
	if group && !fromPort["name"] {
		s.Name += "-" + p.ExposedPort
	}
	if b.opts.internal {
		s.IP = p.ExposedIP
		s.Port, _ = strconv.Atoi(p.ExposedPort)
	} else {
		s.IP = p.HostIP
		s.Port, _ = strconv.Atoi(p.HostPort)
	}
	b.overrideIP(s, p, c)

	forced, err := expandTags(b.opts.forceTags, c)
	if err != nil {
		return nil, errors.New("force tags template failed: " + err.Error())
	}
	if t := mapDefault(meta, "tags", ""); t != "" {
		if meta["tags"], err = expandTags(t, c); err != nil {
			return nil, errors.New("service tags template failed: " + err.Error())
		}
	}
	if p.PortType == "udp" {
		s.Tags = combineTags(mapDefault(meta, "tags", ""), forced, "udp")
		s.ID += ":udp"
	} else {
		s.Tags = combineTags(mapDefault(meta, "tags", ""), forced)
	}
	if id := mapDefault(meta, "id", ""); id != "" {
		s.ID = id
	}
	delete(meta, "id")
	delete(meta, "tags")
	delete(meta, "name")
	s.Attrs = meta
	s.TTL = b.opts.refreshTTL
	return s, nil
}

// overrideIP applies -ip-from-container, then -useIpFromLabel, then a
// container:<id> network mode (the other container's address).
func (b *bridge) overrideIP(s *service, p servicePort, c *container) {
	if b.opts.ipFromContainer {
		s.IP = p.ExposedIP
	}
	if label := b.opts.useIPFromLabel; label != "" {
		if ip := c.Config.Labels[label]; ip != "" {
			if i := strings.LastIndex(ip, "/"); i > -1 {
				ip = ip[:i]
			}
			s.IP = ip
			log.Println("using container IP " + s.IP + " from label '" + label + "'")
		} else {
			log.Println("Label '" + label + "' not found in container configuration")
		}
	}
	if strings.HasPrefix(c.HostConfig.NetworkMode, "container:") {
		other := strings.Split(c.HostConfig.NetworkMode, ":")[1]
		log.Println(s.Name + ": detected container NetworkMode, linked to: " + short(other))
		oc, err := b.docker.inspect(other)
		if err != nil {
			log.Println("unable to inspect network container:", short(other), err)
			return
		}
		s.IP = oc.NetworkSettings.IPAddress
		log.Println(s.Name + ": using network container IP " + s.IP)
	}
}

// removeOnExit handles a "die" event: deregister unless -deregister=on-success and
// the container failed (an exit by a signal counts as success).
func (b *bridge) removeOnExit(id string) {
	b.remove(id, b.shouldRemove(id))
}

func (b *bridge) remove(id string, deregister bool) {
	b.Lock()
	defer b.Unlock()
	if deregister {
		drop := func(services []*service) {
			for _, s := range services {
				if err := b.registry.deregister(s); err != nil {
					log.Println("deregister failed:", s.ID, err)
					continue
				}
				log.Println("removed:", short(id), s.ID)
			}
		}
		drop(b.services[id])
		if d := b.dead[id]; d != nil {
			drop(d.Services)
			delete(b.dead, id)
		}
	} else if b.opts.refreshTTL != 0 && b.services[id] != nil {
		b.dead[id] = &deadContainer{b.opts.refreshTTL, b.services[id]}
	}
	// Forgotten even when the deregistration failed: nothing retries it.
	delete(b.services, id)
}

const signaledBit = 128

func (b *bridge) shouldRemove(id string) bool {
	if b.opts.deregister == "always" {
		return true
	}
	c, err := b.docker.inspect(id)
	var gone errNoSuchContainer
	switch {
	case errors.As(err, &gone):
		log.Printf("registrator: container %v was removed, could not fetch exit code", short(id))
		return true
	case err != nil:
		log.Printf("registrator: error fetching status for container %v on \"die\" event: %v\n", short(id), err)
		return false
	case c.State.Running:
		log.Printf("registrator: not removing container %v, still running", short(id))
		return false
	case c.State.ExitCode == 0:
		return true
	case c.State.ExitCode&signaledBit == signaledBit:
		return true
	}
	return false
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

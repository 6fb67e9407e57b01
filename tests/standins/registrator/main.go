// Command registrator is a TEST-ONLY stand-in for registrator as the lab pins it
// (fayrus/registrator v9.2.0, the maintained fork of gliderlabs/registrator; see
// README.md and docs/registrator.md).
//
// The real image cannot be pulled where the lab's tests run, so this program
// implements, with the Go standard library only, the part of registrator the lab
// uses: its command line, the SERVICE_* container metadata, the Docker events it
// reacts to, the resync and cleanup passes, and the Consul backend. Where the real
// release is slower, stricter or loses things (events dropped while it is busy, no
// retry of a failed registration until the next resync, an exit when the Docker
// event stream ends), the stand-in does the same on purpose.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"
)

// version is the registrator release the stand-in behaves as.
var version = "v9.2.0"

// options holds the command line, with the real flag names and defaults.
type options struct {
	hostIP          string
	internal        bool
	explicit        bool
	useIPFromLabel  string
	ipFromContainer bool
	refreshInterval int
	refreshTTL      int
	forceTags       string
	resyncInterval  int
	deregister      string
	retryAttempts   int
	retryInterval   int
	cleanup         bool
}

func defineFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.hostIP, "ip", "", "IP for ports mapped to the host")
	fs.BoolVar(&o.internal, "internal", false, "Use internal ports instead of published ones")
	fs.BoolVar(&o.explicit, "explicit", false, "Only register containers which have SERVICE_NAME label set")
	fs.StringVar(&o.useIPFromLabel, "useIpFromLabel", "", "Use IP which is stored in a label assigned to the container")
	fs.BoolVar(&o.ipFromContainer, "ip-from-container", false, "Use container IP instead of host IP for service registration")
	fs.IntVar(&o.refreshInterval, "ttl-refresh", 0, "Frequency with which service TTLs are refreshed")
	fs.IntVar(&o.refreshTTL, "ttl", 0, "TTL for services (default is no expiry)")
	fs.StringVar(&o.forceTags, "tags", "", "Append tags for all registered services (supports Go template)")
	fs.IntVar(&o.resyncInterval, "resync", 0, "Frequency with which services are resynchronized")
	fs.StringVar(&o.deregister, "deregister", "always", "Deregister exited services \"always\" or \"on-success\"")
	fs.IntVar(&o.retryAttempts, "retry-attempts", 0, "Max retry attempts to establish a connection with the backend. Use -1 for infinite retries")
	fs.IntVar(&o.retryInterval, "retry-interval", 2000, "Interval (in millisecond) between retry-attempts.")
	fs.BoolVar(&o.cleanup, "cleanup", false, "Remove dangling services")
}

// checkFlags applies the real release's rules, in its order; each failure is fatal.
func (o *options) check() error {
	if (o.refreshTTL == 0 && o.refreshInterval > 0) || (o.refreshTTL > 0 && o.refreshInterval == 0) {
		return errors.New("-ttl and -ttl-refresh must be specified together or not at all")
	}
	if o.refreshTTL > 0 && o.refreshTTL <= o.refreshInterval {
		return errors.New("-ttl must be greater than -ttl-refresh")
	}
	if o.retryInterval <= 0 {
		return errors.New("-retry-interval must be greater than 0")
	}
	if o.deregister != "always" && o.deregister != "on-success" {
		return errors.New("-deregister must be \"always\" or \"on-success\"")
	}
	return nil
}

func fatalIf(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version + " (stand-in)")
		os.Exit(0)
	}
	log.Printf("Starting registrator %s (stand-in, not the real registrator) ...", version)

	var o options
	fs := flag.CommandLine
	defineFlags(fs, &o)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage of %s:\n", os.Args[0])
		fmt.Fprintf(os.Stderr, "  %s [options] <registry URI>\n\n", os.Args[0])
		fs.PrintDefaults()
	}
	flag.Parse()
	switch {
	case flag.NArg() == 0:
		fmt.Fprint(os.Stderr, "Missing required argument for registry URI.\n\n")
		fs.Usage()
		os.Exit(2)
	case flag.NArg() > 1:
		fmt.Fprintln(os.Stderr, "Extra unparsed arguments:")
		fmt.Fprintln(os.Stderr, " ", strings.Join(flag.Args()[1:], " "))
		fmt.Fprint(os.Stderr, "Options should come before the registry URI argument.\n\n")
		fs.Usage()
		os.Exit(2)
	}
	if o.hostIP != "" {
		log.Println("Forcing host IP to", o.hostIP)
	}
	fatalIf(o.check())

	if os.Getenv("DOCKER_HOST") == "" {
		os.Setenv("DOCKER_HOST", "unix:///tmp/docker.sock")
	}
	docker, err := newDockerClient(os.Getenv("DOCKER_HOST"))
	fatalIf(err)

	b, err := connectBackend(docker, flag.Arg(0), &o)
	fatalIf(err)

	// As the real one: the event listener first, then the first sync, so that no
	// container started in between is missed (events can still be lost later).
	events := docker.listen()
	log.Println("Listening for Docker events ...")
	b.sync(false)

	every(o.refreshInterval, b.refresh)
	every(o.resyncInterval, func() { b.sync(true) })

	for ev := range events {
		switch ev.Status {
		case "start":
			go b.add(ev.ID)
		case "die":
			go b.removeOnExit(ev.ID)
		}
	}
	log.Fatal("Docker event loop closed")
}

// connectBackend makes the registry adapter and pings it, retrying both together
// -retry-attempts times (-1: for ever), -retry-interval ms apart.
func connectBackend(docker *dockerClient, uri string, o *options) (*bridge, error) {
	for attempt := 0; o.retryAttempts == -1 || attempt <= o.retryAttempts; attempt++ {
		log.Printf("Connecting to backend (%v/%v)", attempt, o.retryAttempts)
		b, err := newBridge(docker, uri, o)
		if err == nil {
			err = b.registry.ping()
		}
		if err == nil {
			return b, nil
		}
		if o.retryAttempts != -1 && attempt == o.retryAttempts {
			return nil, err
		}
		time.Sleep(time.Duration(o.retryInterval) * time.Millisecond)
	}
	return nil, errors.New("unreachable retry state")
}

// every runs fn every `seconds` seconds, in its own goroutine; 0 means never.
func every(seconds int, fn func()) {
	if seconds <= 0 {
		return
	}
	ticker := time.NewTicker(time.Duration(seconds) * time.Second)
	go func() {
		for range ticker.C {
			fn()
		}
	}()
}

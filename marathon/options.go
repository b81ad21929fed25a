package marathon

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Options are the dispatcher's settings as they go into the app definition
// and the package's defaults. Errors name the `sluice marathon` flag of the
// field at fault, since that is where a user sets it.
type Options struct {
	Name      string  // --name: Marathon app id (without the leading /) and DC/OS service name
	CPUs      float64 // --cpus
	Mem       float64 // --mem, MiB
	Disk      float64 // --disk, MiB
	BinaryURI string  // --binary-uri: the sluice binary, fetched by the Mesos fetcher
	Image     string  // --image: a container image with sluice on its PATH, instead of BinaryURI

	Store           string // --store: the dispatcher's job store (file:// or hdfs://)
	ResourceManager string // --resource-manager: mesos or local
	MesosMaster     string // --mesos-master
	Role            string // --role: the dispatcher framework's Mesos role
	Principal       string // --principal

	// The Mesos secret and the API token each come from a file on the agent
	// (or in the image) or from the DC/OS secret store; never by value, so
	// the app definition, which Marathon shows to anyone who may read it,
	// holds no secret.
	SecretFile      string // --secret-file: path of a file holding the Mesos secret
	DCOSSecret      string // --dcos-secret: DC/OS secret holding the Mesos secret
	TokenFile       string // --token-file: path of a file holding the API's bearer token
	DCOSTokenSecret string // --dcos-token-secret: DC/OS secret holding the API's bearer token

	TLSCert string // --tls-cert: path of the API's certificate
	TLSKey  string // --tls-key: path of its private key

	Labels map[string]string // --label KEY=VALUE, added to the app's labels
}

// DefaultOptions are the flags' defaults: what a DC/OS cluster has (the
// leading Mesos master's well-known name) and what one dispatcher needs.
func DefaultOptions() Options {
	return Options{
		Name:            "sluice",
		CPUs:            1,
		Mem:             1024,
		Disk:            256,
		ResourceManager: "mesos",
		MesosMaster:     "http://leader.mesos:5050",
		Role:            "sluice",
	}
}

// namePattern is what Marathon accepts as an app id (path segments of
// lowercase letters, digits and inner dashes), which DC/OS also takes as the
// service name.
var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(/[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// Validate reports every mistake at once, each naming its flag.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !namePattern.MatchString(o.Name) {
		bad("--name %q: must be lowercase letters, digits and dashes (segments separated by /), as Marathon app ids are", o.Name)
	}
	for _, r := range []struct {
		flag string
		v    float64
	}{{"--cpus", o.CPUs}, {"--mem", o.Mem}, {"--disk", o.Disk}} {
		if !(r.v > 0) {
			bad("%s must be greater than 0, got %v", r.flag, r.v)
		}
	}
	switch {
	case o.BinaryURI != "" && o.Image != "":
		bad("--binary-uri and --image are exclusive: give the binary to fetch or the image that contains it, not both")
	case o.BinaryURI == "" && o.Image == "":
		bad("--binary-uri or --image is required: where the agent gets the sluice binary")
	case o.BinaryURI != "" && !strings.Contains(o.BinaryURI, "://"):
		bad("--binary-uri %q: not a URI such as https://host/path/sluice", o.BinaryURI)
	}
	if o.Store == "" {
		bad("--store is required: the job store URI (file:///path or hdfs://namenode:port/path)")
	} else if !strings.HasPrefix(o.Store, "file://") && !strings.HasPrefix(o.Store, "hdfs://") {
		bad("--store %q: must be a file:// or hdfs:// URI", o.Store)
	}
	switch o.ResourceManager {
	case "mesos":
		if o.MesosMaster == "" {
			bad("--mesos-master is required with --resource-manager mesos")
		}
	case "local":
	default:
		bad("--resource-manager %q: must be mesos or local", o.ResourceManager)
	}
	if o.SecretFile != "" && o.DCOSSecret != "" {
		bad("--secret-file and --dcos-secret are exclusive: the Mesos secret comes from one place")
	}
	if (o.SecretFile != "" || o.DCOSSecret != "") && o.Principal == "" {
		bad("--principal is required with --secret-file or --dcos-secret")
	}
	if o.TokenFile != "" && o.DCOSTokenSecret != "" {
		bad("--token-file and --dcos-token-secret are exclusive: the API token comes from one place")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		bad("--tls-cert and --tls-key go together")
	}
	for k := range o.Labels {
		if k == "" {
			bad("--label: empty key")
		}
		if reserved[k] {
			bad("--label %s: set by sluice marathon itself", k)
		}
	}
	return errors.Join(errs...)
}

// reserved are the labels BuildApp sets for DC/OS's admin router.
var reserved = map[string]bool{labelServiceName: true, labelPortIndex: true, labelScheme: true}

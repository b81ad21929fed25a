package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sluice-stream/sluice/marathon"
)

const marathonUsage = `usage: sluice marathon app [flags]           print the dispatcher's Marathon app definition
       sluice marathon package --out DIR [flags] write the DC/OS Universe package

Run 'sluice marathon app -h' for the flags (both subcommands take them; package also takes --out and --version).
`

// cmdMarathon is `sluice marathon`: the dispatcher's Marathon app
// definition and DC/OS package, built by package marathon.
func cmdMarathon(args []string) int {
	return marathonMain(args, os.Stdout, os.Stderr)
}

func marathonMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, marathonUsage)
		return 2
	}
	switch args[0] {
	case "app":
		return marathonApp(args[1:], stdout, stderr)
	case "package":
		return marathonPackage(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, marathonUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "sluice marathon: unknown subcommand %q\n\n%s", args[0], marathonUsage)
		return 2
	}
}

// labelFlags is --label KEY=VALUE, repeatable.
type labelFlags map[string]string

func (l labelFlags) String() string { return "" }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	l[k] = v
	return nil
}

// marathonFlags declares the options shared by app and package. They are
// the dispatcher's own flags where it has them, so the definition reads
// as the command line it stands for.
func marathonFlags(fs *flag.FlagSet) *marathon.Options {
	o := marathon.DefaultOptions()
	fs.StringVar(&o.Name, "name", o.Name, "Marathon app id (without the leading /) and DC/OS service name")
	fs.Float64Var(&o.CPUs, "cpus", o.CPUs, "CPU shares of the dispatcher")
	fs.Float64Var(&o.Mem, "mem", o.Mem, "memory of the dispatcher, MiB")
	fs.Float64Var(&o.Disk, "disk", o.Disk, "sandbox disk of the dispatcher, MiB")
	fs.StringVar(&o.BinaryURI, "binary-uri", "", "URI of the sluice binary, fetched by the Mesos fetcher (or --image)")
	fs.StringVar(&o.Image, "image", "", "container image with sluice on its PATH (instead of --binary-uri)")
	fs.StringVar(&o.Store, "store", "", "the dispatcher's job store: hdfs://namenode:port/path or file:///path (required)")
	fs.StringVar(&o.ResourceManager, "resource-manager", o.ResourceManager, "mesos or local: where the dispatcher runs framework masters")
	fs.StringVar(&o.MesosMaster, "mesos-master", o.MesosMaster, "the Mesos master's HTTP API")
	fs.StringVar(&o.Role, "role", o.Role, "Mesos role of the dispatcher's framework")
	fs.StringVar(&o.Principal, "principal", "", "Mesos principal of the dispatcher's framework")
	fs.StringVar(&o.SecretFile, "secret-file", "", "path, on the agent or in the image, of a file holding the Mesos secret")
	fs.StringVar(&o.DCOSSecret, "dcos-secret", "", "DC/OS secret holding the Mesos secret (instead of --secret-file)")
	fs.StringVar(&o.TokenFile, "token-file", "", "path of a file holding the API's bearer token")
	fs.StringVar(&o.DCOSTokenSecret, "dcos-token-secret", "", "DC/OS secret holding the API's bearer token (instead of --token-file)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "path of the API's TLS certificate")
	fs.StringVar(&o.TLSKey, "tls-key", "", "path of the API's TLS private key")
	o.Labels = map[string]string{}
	fs.Var(labelFlags(o.Labels), "label", "KEY=VALUE added to the app's labels (repeatable)")
	return &o
}

func parseMarathon(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice marathon %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return false
	}
	return true
}

func marathonApp(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	o := marathonFlags(fs)
	if !parseMarathon(fs, args, stderr) {
		return 2
	}
	data, err := marathon.AppJSON(*o)
	if err != nil {
		fmt.Fprintf(stderr, "sluice marathon app: %v\n", err)
		return 2
	}
	if _, err := stdout.Write(data); err != nil {
		fmt.Fprintf(stderr, "sluice marathon app: %v\n", err)
		return 1
	}
	return 0
}

func marathonPackage(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	o := marathonFlags(fs)
	out := fs.String("out", "", "directory to write the package into (required)")
	version := fs.String("version", "0.1.0", "the package's version")
	if !parseMarathon(fs, args, stderr) {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "sluice marathon package: --out is required")
		return 2
	}
	files, err := marathon.BuildPackage(*o, *version)
	if err != nil {
		fmt.Fprintf(stderr, "sluice marathon package: %v\n", err)
		return 2
	}
	if err := marathon.WriteFiles(*out, files); err != nil {
		fmt.Fprintf(stderr, "sluice marathon package: %v\n", err)
		return 1
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s/%s\n", strings.TrimSuffix(*out, "/"), f.Name)
	}
	return 0
}

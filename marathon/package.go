package marathon

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// File is one file of a package, by its name in the package's directory.
type File struct {
	Name string
	Data []byte
}

// PackageName is the Universe package's name: `dcos package install sluice`.
const PackageName = "sluice"

// versionPattern is what the Universe schema accepts as a package version.
var versionPattern = regexp.MustCompile(`^[-a-zA-Z0-9.]+$`)

// BuildPackage returns the files of a DC/OS Universe package (packaging
// version 4.0) that installs the dispatcher. The options become the
// defaults of config.json, which a user overrides with
// `dcos package install sluice --options=FILE`; rendering
// marathon.json.mustache with them gives what BuildApp gives.
func BuildPackage(o Options, version string) ([]File, error) {
	var errs []error
	if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !versionPattern.MatchString(version) {
		errs = append(errs, fmt.Errorf("--version %q: letters, digits, dots and dashes only", version))
	}
	// Label keys and values are written into the template as they are.
	for k, v := range o.Labels {
		if strings.Contains(k+v, "{{") || strings.Contains(k+v, "}}") {
			errs = append(errs, fmt.Errorf("--label %s: {{ and }} would be read as mustache tags", k))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	pkg, err := marshal(packageJSON(version))
	if err != nil {
		return nil, err
	}
	cfg, err := marshal(configJSON(o))
	if err != nil {
		return nil, err
	}
	res, err := marshal(resourceJSON(o))
	if err != nil {
		return nil, err
	}
	tmpl, err := appTemplate(o)
	if err != nil {
		return nil, err
	}
	return []File{
		{"package.json", pkg},
		{"config.json", cfg},
		{"marathon.json.mustache", tmpl},
		{"resource.json", res},
	}, nil
}

func packageJSON(version string) object {
	return object{
		{"packagingVersion", "4.0"},
		{"name", PackageName},
		{"version", version},
		{"maintainer", "https://github.com/sluice-stream/sluice"},
		{"description", "Sluice's dispatcher: submit stream processing jobs over HTTP; it runs one framework master per job on Mesos, with exactly-once state, checkpoints and savepoints on HDFS."},
		{"tags", []string{"stream-processing", "exactly-once", "kafka", "hdfs", "mesos", "framework"}},
		{"scm", "https://github.com/sluice-stream/sluice"},
		{"website", "https://github.com/sluice-stream/sluice"},
		{"framework", true},
		{"selected", false},
		// Env-based secrets, the Mesos containerizer running images and
		// agent-side HTTP health checks are all there from DC/OS 1.10.
		{"minDcosReleaseVersion", "1.10"},
		{"preInstallNotes", "The dispatcher keeps its jobs in dispatcher.store (hdfs:// or file://), which must outlive the task: on DC/OS, an HDFS service. It registers as a Mesos framework in dispatcher.role and launches one framework master per job."},
		{"postInstallNotes", "The dispatcher's API is behind the admin router at /service/<service.name>/ (sluice submit --dispatcher https://<cluster>/service/<service.name>). Marathon keeps exactly one dispatcher running; it is healthy once GET /healthz answers."},
		{"postUninstallNotes", "The job store in dispatcher.store was left as it was: a dispatcher installed again with the same store recovers its jobs. Cancel jobs (sluice cancel --savepoint) before uninstalling if they must not run on."},
	}
}

// safe is the pattern of every string option: the template writes options
// into JSON strings as they are, so a quote, a backslash or a control
// character would break the rendered app definition.
const safe = `^[^"\\\s]*$`

func str(desc, def string) object {
	return object{{"type", "string"}, {"description", desc}, {"default", def}, {"pattern", safe}}
}

func num(desc string, def float64) object {
	return object{{"type", "number"}, {"description", desc}, {"default", def}, {"minimum", 0}, {"exclusiveMinimum", true}}
}

// match is a schema that matches an object whose named string properties
// are all non-empty (filled) and all empty (blank): the building block of
// the exclusions below, which JSON Schema draft 4 can only say with not.
func match(filled, blank []string) object {
	props := object{}
	for _, name := range filled {
		props = append(props, member{name, object{{"minLength", 1}}})
	}
	for _, name := range blank {
		props = append(props, member{name, object{{"maxLength", 0}}})
	}
	return object{{"properties", props}, {"required", append(slices.Clone(filled), blank...)}}
}

func filled(names ...string) object { return match(names, nil) }

// configJSON is the package's options as a JSON Schema (draft 4, as
// Universe reads it), with the checks Options.Validate makes where JSON
// Schema can say them, so that Cosmos rejects a bad option before it
// renders the template.
func configJSON(o Options) object {
	service := object{
		{"type", "object"},
		{"description", "The dispatcher's Marathon app."},
		{"properties", object{
			{"name", object{{"type", "string"}, {"description", "Marathon app id (without the leading /) and DC/OS service name; the API is at /service/<name>/."}, {"default", o.Name}, {"pattern", namePattern.String()}}},
			{"cpus", num("CPU shares of the dispatcher.", o.CPUs)},
			{"mem", num("Memory of the dispatcher, MiB.", o.Mem)},
			{"disk", num("Sandbox disk of the dispatcher, MiB.", o.Disk)},
			{"binary_uri", str("URI of the sluice binary (linux, amd64) that the Mesos fetcher downloads. Leave empty when image is set.", o.BinaryURI)},
			{"image", str("Container image with sluice on its PATH, run by the Mesos containerizer, instead of binary_uri.", o.Image)},
		}},
		{"required", []string{"name", "cpus", "mem", "disk", "binary_uri", "image"}},
		{"additionalProperties", false},
		// Exactly one of binary_uri and image.
		{"not", object{{"anyOf", []object{filled("binary_uri", "image"), match(nil, []string{"binary_uri", "image"})}}}},
	}
	dispatcher := object{
		{"type", "object"},
		{"description", "What the dispatcher runs jobs with."},
		{"properties", object{
			{"store", object{{"type", "string"}, {"description", "Job store: job specs, states and the dispatcher's framework ID (hdfs://namenode:port/path or file:///path on a volume that outlives the task)."}, {"default", o.Store}, {"pattern", `^(hdfs|file)://[^"\\\s]*$`}}},
			{"resource_manager", object{{"type", "string"}, {"description", "mesos: each framework master is a Mesos task of the dispatcher's framework; local: a child process of the dispatcher."}, {"default", o.ResourceManager}, {"enum", []string{"mesos", "local"}}}},
			{"mesos_master", str("The Mesos master's HTTP API (required with resource_manager mesos).", o.MesosMaster)},
			{"role", str("Mesos role of the dispatcher's framework.", o.Role)},
		}},
		{"required", []string{"store", "resource_manager", "mesos_master", "role"}},
		{"additionalProperties", false},
		{"anyOf", []object{
			{{"properties", object{{"resource_manager", object{{"enum", []string{"local"}}}}}}},
			filled("mesos_master"),
		}},
	}
	auth := object{
		{"type", "object"},
		{"description", "Credentials, given as files or DC/OS secrets, never by value."},
		{"properties", object{
			{"principal", str("Mesos principal of the dispatcher's framework.", o.Principal)},
			{"secret_file", str("Path of a file, on the agent or in the image, holding the principal's Mesos secret.", o.SecretFile)},
			{"dcos_secret", str("DC/OS secret holding the principal's Mesos secret (instead of secret_file).", o.DCOSSecret)},
			{"token_file", str("Path of a file holding the bearer token every API call must carry (except /healthz).", o.TokenFile)},
			{"dcos_token_secret", str("DC/OS secret holding that bearer token (instead of token_file).", o.DCOSTokenSecret)},
			{"tls_cert", str("Path of the API's TLS certificate; with tls_key, the API is served over HTTPS.", o.TLSCert)},
			{"tls_key", str("Path of the API's TLS private key.", o.TLSKey)},
		}},
		{"required", []string{"principal", "secret_file", "dcos_secret", "token_file", "dcos_token_secret", "tls_cert", "tls_key"}},
		{"additionalProperties", false},
		{"not", object{{"anyOf", []object{
			filled("secret_file", "dcos_secret"),
			filled("token_file", "dcos_token_secret"),
			match([]string{"secret_file"}, []string{"principal"}),
			match([]string{"dcos_secret"}, []string{"principal"}),
			match([]string{"tls_cert"}, []string{"tls_key"}),
			match([]string{"tls_key"}, []string{"tls_cert"}),
		}}}},
	}
	return object{
		{"$schema", "http://json-schema.org/schema#"},
		{"type", "object"},
		{"properties", object{
			{"service", service},
			{"dispatcher", dispatcher},
			{"auth", auth},
		}},
		{"required", []string{"service", "dispatcher", "auth"}},
		{"additionalProperties", false},
	}
}

func resourceJSON(o Options) object {
	if o.Image != "" {
		return object{{"assets", object{{"container", object{{"docker", object{{"sluice", o.Image}}}}}}}}
	}
	return object{{"assets", object{{"uris", object{{"sluice", o.BinaryURI}}}}}}
}

// appTemplate is marathon.json.mustache: BuildApp's definition with the
// options as mustache tags. Strings use {{{…}}}: mustache's HTML escaping
// would turn & in a URI into &amp;; config.json's patterns keep quotes and
// backslashes out instead.
func appTemplate(o Options) ([]byte, error) {
	q := func(s string) string { // s as the inside of a JSON string
		b, _ := compactJSON(s)
		return string(b[1 : len(b)-1])
	}
	var labels strings.Builder
	keys := make([]string, 0, len(o.Labels))
	for k := range o.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&labels, "    \"%s\": \"%s\",\n", q(k), q(o.Labels[k]))
	}
	env := func(name, key string) string {
		return fmt.Sprintf("    {{#%[2]s}}\"%[1]s\": \"{{{%[2]s}}}\",{{/%[2]s}}\n", name, key)
	}
	var t strings.Builder
	t.WriteString("{\n")
	t.WriteString(`  "id": "/{{{service.name}}}",` + "\n")
	t.WriteString(`  "cmd": "{{#auth.dcos_secret}}` + q(cmdSecretToFile) + `{{/auth.dcos_secret}}` +
		`{{#auth.dcos_token_secret}}` + q(cmdTokenToFile) + `{{/auth.dcos_token_secret}}` +
		q(cmdExec) + `{{#service.image}}` + q(cmdFromImage) + `{{/service.image}}{{^service.image}}` + q(cmdFetched) + `{{/service.image}}` +
		q(cmdDispatcher) + `",` + "\n")
	t.WriteString(`  "instances": 1,
  "cpus": {{service.cpus}},
  "mem": {{service.mem}},
  "disk": {{service.disk}},
  {{#service.image}}
  "container": {"type": "MESOS", "docker": {"image": "{{{service.image}}}"}},
  {{/service.image}}
  {{^service.image}}
  "fetch": [{"uri": "{{{service.binary_uri}}}", "executable": true, "destPath": "sluice"}],
  {{/service.image}}
  "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "api"}],
  "env": {
`)
	t.WriteString(env("SLUICE_MESOS_MASTER", "dispatcher.mesos_master"))
	t.WriteString(env("SLUICE_ROLE", "dispatcher.role"))
	t.WriteString(env("SLUICE_PRINCIPAL", "auth.principal"))
	t.WriteString(env("SLUICE_SECRET_FILE", "auth.secret_file"))
	t.WriteString(env("SLUICE_TOKEN_FILE", "auth.token_file"))
	t.WriteString(env("SLUICE_TLS_CERT", "auth.tls_cert"))
	t.WriteString(env("SLUICE_TLS_KEY", "auth.tls_key"))
	fmt.Fprintf(&t, `    {{#auth.dcos_secret}}"%[1]s": {"secret": "%[2]s"},{{/auth.dcos_secret}}
    {{#auth.dcos_token_secret}}"%[3]s": {"secret": "%[4]s"},{{/auth.dcos_token_secret}}
    "SLUICE_RESOURCE_MANAGER": "{{{dispatcher.resource_manager}}}",
    "SLUICE_STORE": "{{{dispatcher.store}}}"
  },
  {{#auth.dcos_secret}}
  "secrets": {
    "%[5]s": {"source": "{{{auth.dcos_secret}}}"}{{#auth.dcos_token_secret}},
    "%[6]s": {"source": "{{{auth.dcos_token_secret}}}"}{{/auth.dcos_token_secret}}
  },
  {{/auth.dcos_secret}}
  {{^auth.dcos_secret}}{{#auth.dcos_token_secret}}
  "secrets": {
    "%[6]s": {"source": "{{{auth.dcos_token_secret}}}"}
  },
  {{/auth.dcos_token_secret}}{{/auth.dcos_secret}}
  "labels": {
`, envDCOSSecret, secretMesos, envDCOSToken, secretToken, secretMesos, secretToken)
	t.WriteString(labels.String())
	fmt.Fprintf(&t, `    "%s": "{{{service.name}}}",
    "%s": "0",
    "%s": "http{{#auth.tls_cert}}s{{/auth.tls_cert}}"
  },
  "healthChecks": [
    {
      "protocol": "MESOS_HTTP{{#auth.tls_cert}}S{{/auth.tls_cert}}",
      "path": "%s",
      "portIndex": 0,
      "gracePeriodSeconds": %d,
      "intervalSeconds": %d,
      "timeoutSeconds": %d,
      "maxConsecutiveFailures": %d
    }
  ],
  "upgradeStrategy": {"minimumHealthCapacity": 0, "maximumOverCapacity": 0},
  "taskKillGracePeriodSeconds": %d
}
`, labelServiceName, labelPortIndex, labelScheme, healthPath, healthGrace, healthInterval, healthTimeout, healthMaxFailures, killGraceSeconds)
	return []byte(t.String()), nil
}

// PackageFile is the file named name among files, or nil.
func PackageFile(files []File, name string) []byte {
	for _, f := range files {
		if f.Name == name {
			return f.Data
		}
	}
	return nil
}

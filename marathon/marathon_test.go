package marathon

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/cbroglie/mustache"
)

func testOptions() Options {
	o := DefaultOptions()
	o.BinaryURI = "https://downloads.example.com/sluice/v0.1.0/sluice-linux-amd64"
	o.Store = "hdfs://name-0-node.hdfs.autoip.dcos.thisdcos.directory:9001/sluice"
	return o
}

// variants cover every branch of the builders and the template.
func variants() map[string]Options {
	v := map[string]Options{}
	v["binary"] = testOptions()

	o := testOptions()
	o.BinaryURI, o.Image = "", "registry.example.com/sluice:0.1.0"
	v["image"] = o

	o = testOptions()
	o.Principal, o.SecretFile, o.TokenFile = "sluice", "/etc/sluice/mesos-secret", "/etc/sluice/token"
	o.TLSCert, o.TLSKey = "/etc/sluice/tls.crt", "/etc/sluice/tls.key"
	v["files"] = o

	o = testOptions()
	o.Principal, o.DCOSSecret, o.DCOSTokenSecret = "sluice", "sluice/mesos-secret", "sluice/api-token"
	v["dcos secrets"] = o

	o = testOptions()
	o.Principal, o.DCOSSecret = "sluice", "sluice/mesos-secret"
	o.Image, o.BinaryURI = "registry.example.com/sluice:0.1.0", ""
	v["image, mesos secret"] = o

	o = testOptions()
	o.DCOSTokenSecret = "sluice/api-token"
	v["token secret"] = o

	o = testOptions()
	o.ResourceManager, o.MesosMaster, o.Role = "local", "", ""
	o.Store = "file:///var/lib/sluice?a=1&b=2"
	o.CPUs, o.Mem, o.Disk = 0.5, 512.5, 100
	v["local"] = o

	o = testOptions()
	o.Name = "dev/streams/sluice"
	o.Labels = map[string]string{"team": "streams", "HAPROXY_GROUP": "internal"}
	v["labels, nested id"] = o
	return v
}

func TestMarathonAppValidates(t *testing.T) {
	s := compile(t, "marathon/AppDefinition.json")
	for name, o := range variants() {
		data, err := AppJSON(o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		validate(t, s, name, data)
	}
}

func TestMarathonApp(t *testing.T) {
	o := variants()["dcos secrets"]
	a, err := BuildApp(o)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "/sluice" || a.Instances != 1 {
		t.Errorf("id %q instances %d", a.ID, a.Instances)
	}
	if a.UpgradeStrategy != (UpgradeStrategy{0, 0}) {
		t.Errorf("upgradeStrategy %+v: one dispatcher at a time needs 0/0", a.UpgradeStrategy)
	}
	if len(a.HealthChecks) != 1 || a.HealthChecks[0].Path != "/healthz" || a.HealthChecks[0].PortIndex != 0 ||
		a.HealthChecks[0].TimeoutSeconds >= a.HealthChecks[0].IntervalSeconds {
		t.Errorf("health checks %+v", a.HealthChecks)
	}
	if len(a.PortDefinitions) != 1 || !strings.Contains(a.Cmd, `--listen ":$PORT0"`) {
		t.Errorf("ports %+v, cmd %q", a.PortDefinitions, a.Cmd)
	}
	if len(a.Fetch) != 1 || a.Fetch[0].URI != o.BinaryURI || !a.Fetch[0].Executable || a.Container != nil {
		t.Errorf("fetch %+v container %+v", a.Fetch, a.Container)
	}
	if a.Env["SLUICE_STORE"].Value != o.Store || a.Env["SLUICE_MESOS_MASTER"].Value != o.MesosMaster ||
		a.Env["SLUICE_ROLE"].Value != "sluice" || a.Env["SLUICE_PRINCIPAL"].Value != "sluice" {
		t.Errorf("env %+v", a.Env)
	}
	// Secrets by reference only: the env names a declared secret, which
	// names the DC/OS secret store's path.
	if a.Env[envDCOSSecret] != (EnvVar{Secret: secretMesos}) || a.Secrets[secretMesos].Source != o.DCOSSecret ||
		a.Env[envDCOSToken] != (EnvVar{Secret: secretToken}) || a.Secrets[secretToken].Source != o.DCOSTokenSecret {
		t.Errorf("env %+v secrets %+v", a.Env, a.Secrets)
	}
	if !strings.Contains(a.Cmd, "SLUICE_SECRET_FILE=") || !strings.Contains(a.Cmd, "SLUICE_TOKEN_FILE=") ||
		!strings.HasSuffix(a.Cmd, `exec "$MESOS_SANDBOX/sluice" dispatcher --listen ":$PORT0"`) {
		t.Errorf("cmd %q", a.Cmd)
	}
	want := map[string]string{"DCOS_SERVICE_NAME": "sluice", "DCOS_SERVICE_PORT_INDEX": "0", "DCOS_SERVICE_SCHEME": "http"}
	if !reflect.DeepEqual(a.Labels, want) {
		t.Errorf("labels %v", a.Labels)
	}

	plain, err := AppJSON(variants()["binary"])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decode(t, plain).(map[string]any)["secrets"]; ok {
		t.Errorf("an app without DC/OS secrets declares secrets (plain Marathon refuses it):\n%s", plain)
	}

	img, err := BuildApp(variants()["image"])
	if err != nil {
		t.Fatal(err)
	}
	if img.Container == nil || img.Container.Docker.Image != "registry.example.com/sluice:0.1.0" || img.Fetch != nil ||
		img.Cmd != `exec sluice dispatcher --listen ":$PORT0"` {
		t.Errorf("image app: container %+v fetch %+v cmd %q", img.Container, img.Fetch, img.Cmd)
	}
	tls, err := BuildApp(variants()["files"])
	if err != nil {
		t.Fatal(err)
	}
	if tls.HealthChecks[0].Protocol != "MESOS_HTTPS" || tls.Labels["DCOS_SERVICE_SCHEME"] != "https" ||
		tls.Env["SLUICE_SECRET_FILE"].Value != "/etc/sluice/mesos-secret" || len(tls.Secrets) != 0 {
		t.Errorf("tls app %+v", tls)
	}
}

// TestMarathonBadOptions: each mistake is refused with the flag named.
func TestMarathonBadOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"binary and image", func(o *Options) { o.Image = "sluice:1" }, "--binary-uri and --image are exclusive"},
		{"neither", func(o *Options) { o.BinaryURI = "" }, "--binary-uri or --image is required"},
		{"binary not a URI", func(o *Options) { o.BinaryURI = "sluice" }, "--binary-uri"},
		{"cpus 0", func(o *Options) { o.CPUs = 0 }, "--cpus must be greater than 0"},
		{"cpus negative", func(o *Options) { o.CPUs = -1 }, "--cpus must be greater than 0"},
		{"mem 0", func(o *Options) { o.Mem = 0 }, "--mem"},
		{"disk negative", func(o *Options) { o.Disk = -5 }, "--disk"},
		{"name", func(o *Options) { o.Name = "Sluice_1" }, "--name"},
		{"name empty", func(o *Options) { o.Name = "" }, "--name"},
		{"no store", func(o *Options) { o.Store = "" }, "--store is required"},
		{"store scheme", func(o *Options) { o.Store = "s3://bucket/x" }, "--store"},
		{"resource manager", func(o *Options) { o.ResourceManager = "yarn" }, "--resource-manager"},
		{"no master", func(o *Options) { o.MesosMaster = "" }, "--mesos-master is required"},
		{"two secrets", func(o *Options) { o.Principal, o.SecretFile, o.DCOSSecret = "p", "/f", "s" }, "--secret-file and --dcos-secret"},
		{"secret without principal", func(o *Options) { o.DCOSSecret = "s" }, "--principal is required"},
		{"two tokens", func(o *Options) { o.TokenFile, o.DCOSTokenSecret = "/t", "t" }, "--token-file and --dcos-token-secret"},
		{"cert without key", func(o *Options) { o.TLSCert = "/c" }, "--tls-cert and --tls-key"},
		{"reserved label", func(o *Options) { o.Labels = map[string]string{"DCOS_SERVICE_NAME": "x"} }, "--label DCOS_SERVICE_NAME"},
	} {
		o := testOptions()
		c.edit(&o)
		_, err := AppJSON(o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.want)
		}
		_, err = BuildPackage(o, "0.1.0")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: package error %v, want one with %q", c.name, err, c.want)
		}
	}
	o := testOptions()
	o.CPUs, o.Image = 0, "x"
	err := o.Validate()
	if err == nil || !strings.Contains(err.Error(), "--cpus") || !strings.Contains(err.Error(), "--image") {
		t.Errorf("every mistake at once: %v", err)
	}
	if _, err := BuildPackage(testOptions(), "0.1 beta"); err == nil || !strings.Contains(err.Error(), "--version") {
		t.Errorf("bad version: %v", err)
	}
	o = testOptions()
	o.Labels = map[string]string{"x": "{{evil}}"}
	if _, err := BuildPackage(o, "0.1.0"); err == nil || !strings.Contains(err.Error(), "--label x") {
		t.Errorf("mustache in a label: %v", err)
	}
}

// defaults collects the defaults of a config.json, as Cosmos fills in the
// options a user left out.
func defaults(schema map[string]any) any {
	props, ok := schema["properties"].(map[string]any)
	if !ok {
		return schema["default"]
	}
	out := map[string]any{}
	for k, p := range props {
		if d := defaults(p.(map[string]any)); d != nil {
			out[k] = d
		}
	}
	return out
}

func decode(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, data)
	}
	return v
}

// render renders the package's template with its config.json's defaults.
func render(t *testing.T, files []File) (rendered []byte, options any) {
	t.Helper()
	cfg := decode(t, PackageFile(files, "config.json")).(map[string]any)
	options = defaults(cfg)
	tmpl, err := mustache.ParseString(string(PackageFile(files, "marathon.json.mustache")))
	if err != nil {
		t.Fatalf("marathon.json.mustache: %v", err)
	}
	out, err := tmpl.Render(options)
	if err != nil {
		t.Fatalf("rendering marathon.json.mustache: %v", err)
	}
	return []byte(out), options
}

func TestMarathonPackageValidates(t *testing.T) {
	pkgSchema := compile(t, "universe/package-schema.json")
	cfgSchema := compile(t, "universe/config-schema.json")
	resSchema := compile(t, "universe/v3-resource-schema.json")
	appSchema := compile(t, "marathon/AppDefinition.json")
	saved := mustache.AllowMissingVariables
	mustache.AllowMissingVariables = false // a tag config.json lacks is a bug
	defer func() { mustache.AllowMissingVariables = saved }()

	for name, o := range variants() {
		files, err := BuildPackage(o, "0.1.0")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var names []string
		for _, f := range files {
			names = append(names, f.Name)
		}
		if strings.Join(names, " ") != "package.json config.json marathon.json.mustache resource.json" {
			t.Fatalf("files %v", names)
		}
		validate(t, pkgSchema, name+": package.json", PackageFile(files, "package.json"))
		validate(t, cfgSchema, name+": config.json", PackageFile(files, "config.json"))
		validate(t, resSchema, name+": resource.json", PackageFile(files, "resource.json"))
		if v := decode(t, PackageFile(files, "package.json")).(map[string]any); v["packagingVersion"] != "4.0" {
			t.Errorf("%s: packagingVersion %v", name, v["packagingVersion"])
		}

		rendered, options := render(t, files)
		validate(t, appSchema, name+": rendered marathon.json.mustache", rendered)

		// The package's defaults are valid options by its own config.json.
		validate(t, compileDoc(t, PackageFile(files, "config.json")), name+": config.json defaults", mustJSON(t, options))

		// And the template, so rendered, is the app BuildApp writes.
		want, err := AppJSON(o)
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, rendered); !reflect.DeepEqual(got, decode(t, want)) {
			t.Errorf("%s: rendered template differs from sluice marathon app:\n%s\nwant\n%s", name, rendered, want)
		}
	}
}

// TestMarathonConfigRejects: config.json refuses, before Cosmos renders the
// template, what Options.Validate refuses.
func TestMarathonConfigRejects(t *testing.T) {
	files, err := BuildPackage(testOptions(), "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	s := compileDoc(t, PackageFile(files, "config.json"))
	_, base := render(t, files)
	for _, c := range []struct {
		name string
		edit func(svc, disp, auth map[string]any)
	}{
		{"binary and image", func(s, _, _ map[string]any) { s["image"] = "sluice:1" }},
		{"neither", func(s, _, _ map[string]any) { s["binary_uri"] = "" }},
		{"cpus 0", func(s, _, _ map[string]any) { s["cpus"] = 0 }},
		{"mem negative", func(s, _, _ map[string]any) { s["mem"] = -1 }},
		{"bad name", func(s, _, _ map[string]any) { s["name"] = "Sluice" }},
		{"quote in a URI", func(s, _, _ map[string]any) { s["binary_uri"] = `https://x/"` }},
		{"store scheme", func(_, d, _ map[string]any) { d["store"] = "s3://b/x" }},
		{"resource manager", func(_, d, _ map[string]any) { d["resource_manager"] = "yarn" }},
		{"mesos without master", func(_, d, _ map[string]any) { d["mesos_master"] = "" }},
		{"two secrets", func(_, _, a map[string]any) { a["principal"], a["secret_file"], a["dcos_secret"] = "p", "/f", "s" }},
		{"secret without principal", func(_, _, a map[string]any) { a["dcos_secret"] = "s" }},
		{"two tokens", func(_, _, a map[string]any) { a["token_file"], a["dcos_token_secret"] = "/t", "t" }},
		{"key without cert", func(_, _, a map[string]any) { a["tls_key"] = "/k" }},
		{"unknown option", func(_, _, a map[string]any) { a["password"] = "x" }},
	} {
		opts := decode(t, mustJSON(t, base)).(map[string]any) // a deep copy
		c.edit(opts["service"].(map[string]any), opts["dispatcher"].(map[string]any), opts["auth"].(map[string]any))
		if err := s.Validate(opts); err == nil {
			t.Errorf("%s: config.json accepts %v", c.name, opts)
		}
	}
	opts := decode(t, mustJSON(t, base)).(map[string]any)
	opts["dispatcher"].(map[string]any)["resource_manager"] = "local"
	opts["dispatcher"].(map[string]any)["mesos_master"] = ""
	if err := s.Validate(opts); err != nil {
		t.Errorf("local without a Mesos master: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMarathonWriteFiles(t *testing.T) {
	files, err := BuildPackage(testOptions(), "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() + "/a/b"
	if err := WriteFiles(dir, files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := readFile(dir + "/" + f.Name)
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s: %v", f.Name, err)
		}
	}
}

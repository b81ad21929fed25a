package marathon

import (
	"bytes"
	"encoding/json"
	"strings"
)

// App is a Marathon app definition (POST /v2/apps), with only the fields
// the dispatcher uses.
type App struct {
	ID                         string            `json:"id"`
	Cmd                        string            `json:"cmd"`
	Instances                  int               `json:"instances"`
	CPUs                       float64           `json:"cpus"`
	Mem                        float64           `json:"mem"`
	Disk                       float64           `json:"disk"`
	Fetch                      []Fetch           `json:"fetch,omitempty"`
	Container                  *Container        `json:"container,omitempty"`
	PortDefinitions            []PortDefinition  `json:"portDefinitions"`
	Env                        map[string]EnvVar `json:"env"`
	Secrets                    map[string]Secret `json:"secrets,omitempty"`
	Labels                     map[string]string `json:"labels"`
	HealthChecks               []HealthCheck     `json:"healthChecks"`
	UpgradeStrategy            UpgradeStrategy   `json:"upgradeStrategy"`
	TaskKillGracePeriodSeconds int               `json:"taskKillGracePeriodSeconds"`
}

// Fetch is a URI the Mesos fetcher downloads into the sandbox.
type Fetch struct {
	URI        string `json:"uri"`
	Executable bool   `json:"executable"`
	DestPath   string `json:"destPath,omitempty"`
}

// Container runs the task from an image with the Mesos containerizer
// (type MESOS), which DC/OS recommends over the Docker daemon.
type Container struct {
	Type   string `json:"type"`
	Docker Docker `json:"docker"`
}

// Docker names the image.
type Docker struct {
	Image string `json:"image"`
}

// PortDefinition asks for one host port.
type PortDefinition struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Name     string `json:"name"`
}

// EnvVar is an environment variable: a plain value, or a reference to a
// secret declared in App.Secrets.
type EnvVar struct {
	Value  string
	Secret string
}

// MarshalJSON writes a string, or {"secret": name}.
func (e EnvVar) MarshalJSON() ([]byte, error) {
	if e.Secret != "" {
		return json.Marshal(map[string]string{"secret": e.Secret})
	}
	return json.Marshal(e.Value)
}

// Secret declares a DC/OS secret the app may reference.
type Secret struct {
	Source string `json:"source"`
}

// HealthCheck is one of Marathon's health checks.
type HealthCheck struct {
	Protocol               string `json:"protocol"`
	Path                   string `json:"path"`
	PortIndex              int    `json:"portIndex"`
	GracePeriodSeconds     int    `json:"gracePeriodSeconds"`
	IntervalSeconds        int    `json:"intervalSeconds"`
	TimeoutSeconds         int    `json:"timeoutSeconds"`
	MaxConsecutiveFailures int    `json:"maxConsecutiveFailures"`
}

// UpgradeStrategy bounds how many instances run during a deployment.
type UpgradeStrategy struct {
	MinimumHealthCapacity float64 `json:"minimumHealthCapacity"`
	MaximumOverCapacity   float64 `json:"maximumOverCapacity"`
}

const (
	labelServiceName = "DCOS_SERVICE_NAME"
	labelPortIndex   = "DCOS_SERVICE_PORT_INDEX"
	labelScheme      = "DCOS_SERVICE_SCHEME"

	// Keys of App.Secrets and the variables they are exposed as. The cmd
	// moves each value into a file only the task's user can read, because
	// the dispatcher takes secrets from files (--secret-file, --token-file).
	secretMesos   = "mesos-secret"
	secretToken   = "api-token"
	envDCOSSecret = "SLUICE_DCOS_MESOS_SECRET"
	envDCOSToken  = "SLUICE_DCOS_API_TOKEN"

	// The health check. The grace period covers the dispatcher's start:
	// reading every job back from the store (HDFS) and adopting the
	// running masters. Three misses in a row, 30 s apart, get it killed
	// and started again.
	healthPath        = "/healthz"
	healthGrace       = 300
	healthInterval    = 30
	healthTimeout     = 10
	healthMaxFailures = 3
	// Time between SIGTERM and SIGKILL: the dispatcher finishes the
	// requests in flight and syncs its store.
	killGraceSeconds = 30
)

// Pieces of the task's command, shared with the mustache template so both
// write the same command. printf is a shell builtin, so a secret never
// shows in a process's arguments; the subshell keeps the umask from the
// dispatcher's own files.
const (
	cmdSecretToFile = `(umask 077 && printf '%s' "$` + envDCOSSecret + `" > "$MESOS_SANDBOX/.mesos-secret") && unset ` + envDCOSSecret +
		` && export SLUICE_SECRET_FILE="$MESOS_SANDBOX/.mesos-secret" && `
	cmdTokenToFile = `(umask 077 && printf '%s' "$` + envDCOSToken + `" > "$MESOS_SANDBOX/.api-token") && unset ` + envDCOSToken +
		` && export SLUICE_TOKEN_FILE="$MESOS_SANDBOX/.api-token" && `
	cmdExec       = `exec `
	cmdFetched    = `"$MESOS_SANDBOX/sluice"` // the fetched binary (Fetch.DestPath)
	cmdFromImage  = `sluice`                  // on the image's PATH
	cmdDispatcher = ` dispatcher --listen ":$PORT0"`
)

// BuildApp returns the dispatcher's app definition. One instance: the
// dispatcher owns its Mesos framework and its store, so a deployment stops
// the old task before it starts the new one (upgradeStrategy 0/0).
// Every setting but the port goes through SLUICE_… variables, so no user
// value is ever parsed by the shell that runs cmd.
func BuildApp(o Options) (App, error) {
	if err := o.Validate(); err != nil {
		return App{}, err
	}
	scheme, check := "http", "MESOS_HTTP"
	if o.TLSCert != "" {
		scheme, check = "https", "MESOS_HTTPS"
	}
	a := App{
		ID:              "/" + o.Name,
		Instances:       1,
		CPUs:            o.CPUs,
		Mem:             o.Mem,
		Disk:            o.Disk,
		PortDefinitions: []PortDefinition{{Port: 0, Protocol: "tcp", Name: "api"}},
		Env: map[string]EnvVar{
			"SLUICE_STORE":            {Value: o.Store},
			"SLUICE_RESOURCE_MANAGER": {Value: o.ResourceManager},
		},
		Labels: map[string]string{
			labelServiceName: o.Name,
			labelPortIndex:   "0",
			labelScheme:      scheme,
		},
		HealthChecks: []HealthCheck{{
			// Checked by the agent next to the task (MESOS_HTTP) rather
			// than by Marathon (HTTP), which Marathon deprecates: it does
			// not depend on Marathon reaching every agent.
			Protocol:               check,
			Path:                   healthPath,
			PortIndex:              0,
			GracePeriodSeconds:     healthGrace,
			IntervalSeconds:        healthInterval,
			TimeoutSeconds:         healthTimeout,
			MaxConsecutiveFailures: healthMaxFailures,
		}},
		UpgradeStrategy:            UpgradeStrategy{MinimumHealthCapacity: 0, MaximumOverCapacity: 0},
		TaskKillGracePeriodSeconds: killGraceSeconds,
	}
	setEnv := func(name, v string) {
		if v != "" {
			a.Env[name] = EnvVar{Value: v}
		}
	}
	setEnv("SLUICE_MESOS_MASTER", o.MesosMaster)
	setEnv("SLUICE_ROLE", o.Role)
	setEnv("SLUICE_PRINCIPAL", o.Principal)
	setEnv("SLUICE_SECRET_FILE", o.SecretFile)
	setEnv("SLUICE_TOKEN_FILE", o.TokenFile)
	setEnv("SLUICE_TLS_CERT", o.TLSCert)
	setEnv("SLUICE_TLS_KEY", o.TLSKey)

	var cmd strings.Builder
	if o.DCOSSecret != "" || o.DCOSTokenSecret != "" {
		// Only then: plain Marathon refuses secrets unless started with
		// the secrets feature.
		a.Secrets = map[string]Secret{}
	}
	if o.DCOSSecret != "" {
		a.Secrets[secretMesos] = Secret{Source: o.DCOSSecret}
		a.Env[envDCOSSecret] = EnvVar{Secret: secretMesos}
		cmd.WriteString(cmdSecretToFile)
	}
	if o.DCOSTokenSecret != "" {
		a.Secrets[secretToken] = Secret{Source: o.DCOSTokenSecret}
		a.Env[envDCOSToken] = EnvVar{Secret: secretToken}
		cmd.WriteString(cmdTokenToFile)
	}
	cmd.WriteString(cmdExec)
	if o.Image != "" {
		a.Container = &Container{Type: "MESOS", Docker: Docker{Image: o.Image}}
		cmd.WriteString(cmdFromImage)
	} else {
		a.Fetch = []Fetch{{URI: o.BinaryURI, Executable: true, DestPath: "sluice"}}
		cmd.WriteString(cmdFetched)
	}
	cmd.WriteString(cmdDispatcher)
	a.Cmd = cmd.String()

	for k, v := range o.Labels {
		a.Labels[k] = v
	}
	return a, nil
}

// AppJSON is BuildApp's result as indented JSON with a final newline, as
// `sluice marathon app` prints it.
func AppJSON(o Options) ([]byte, error) {
	a, err := BuildApp(o)
	if err != nil {
		return nil, err
	}
	return marshal(a)
}

// marshal indents and leaves <, > and & as they are: the cmd's shell
// redirections and && read better than \u003e and \u0026.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

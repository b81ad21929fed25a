package mesostest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
)

// AgentConfig describes one agent.
type AgentConfig struct {
	// Hostname in offers; default "127.0.0.1". Tasks always run on this
	// machine; 127.0.0.2, 127.0.0.3 … give distinct hostnames that resolve
	// (for hostname constraints).
	Hostname string
	CPUs     float64 // default 2
	Mem      float64 // MB, default 2048
	Disk     float64 // MB, default 4096
	// Ports default to [31000-32000] for the first agent and the next 1001
	// ports for each further one, so that tasks on different agents of this
	// one machine never get the same port. An empty, non-nil slice: no ports.
	Ports      []Range
	Attributes map[string]string // TEXT attributes, e.g. rack: r1
}

// Config configures a test master.
type Config struct {
	// Agents to start; default one agent with the defaults of AgentConfig.
	Agents []AgentConfig
	// HeartbeatInterval between HEARTBEAT events; default 15 s like the real master.
	HeartbeatInterval time.Duration
	// AgentPingTimeout is how long after an agent stops answering it is marked
	// unreachable (agent_ping_timeout × max_agent_ping_timeouts); default 75 s.
	AgentPingTimeout time.Duration
	// AllocationInterval between allocation cycles; default 1 s.
	AllocationInterval time.Duration
	// StatusUpdateRetry is how soon an agent re-sends an un-acked update; default 10 s.
	StatusUpdateRetry time.Duration
	// KillGracePeriod between SIGTERM and SIGKILL of a killed task; default 3 s.
	KillGracePeriod time.Duration
	// MaxFailoverTimeout, when set, caps every framework's failover_timeout so
	// tests need not wait for the framework's own figure.
	MaxFailoverTimeout time.Duration
	// Credentials (principal → secret) turn on HTTP framework authentication
	// (--authenticate_http_frameworks with the basic authenticator).
	Credentials map[string]string
	// WorkDir holds the agents' sandboxes; default a new temporary directory
	// that Close removes.
	WorkDir string
	// ExecutorEnvironment is added to every task's environment, like the
	// agent's --executor_environment_variables.
	ExecutorEnvironment map[string]string
	// Leader, when set ("host:port"), makes this a non-leading master: it has
	// no agents and answers with 307 redirects to the leader. NoLeader makes it
	// answer 503 "No leader elected" instead.
	Leader   string
	NoLeader bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 15 * time.Second
	}
	if c.AgentPingTimeout <= 0 {
		c.AgentPingTimeout = 75 * time.Second
	}
	if c.AllocationInterval <= 0 {
		c.AllocationInterval = time.Second
	}
	if c.StatusUpdateRetry <= 0 {
		c.StatusUpdateRetry = 10 * time.Second
	}
	if c.KillGracePeriod <= 0 {
		c.KillGracePeriod = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.Agents) == 0 && c.Leader == "" && !c.NoLeader {
		c.Agents = []AgentConfig{{}}
	}
	for i := range c.Agents {
		a := &c.Agents[i]
		if a.Hostname == "" {
			a.Hostname = "127.0.0.1"
		}
		if a.CPUs == 0 {
			a.CPUs = 2
		}
		if a.Mem == 0 {
			a.Mem = 2048
		}
		if a.Disk == 0 {
			a.Disk = 4096
		}
		if a.Ports == nil {
			base := uint64(31000 + 1001*i)
			a.Ports = []Range{{base, base + 1000}}
		}
	}
}

// Master is a Mesos master with agents, for tests.
type Master struct {
	cfg    Config
	log    *slog.Logger
	id     string
	ln     *injectListener
	srv    *http.Server
	addr   *net.TCPAddr
	ownDir bool

	mu         sync.Mutex
	closed     bool
	frameworks map[string]*framework
	fwOrder    []string
	removed    map[string]bool
	completed  []mesos.FrameworkInfo // removed frameworks, for GET_FRAMEWORKS
	agents     []*agent
	agentByID  map[string]*agent
	offers     map[string]*offer
	nextOffer  int
	nextFw     int
	quotas     map[string]*quotaEntry
	quotaOrder []string
	hijacked   map[net.Conn]struct{}
	running    map[*task]struct{} // tasks whose process has not exited
	wake       chan struct{}
	stop       chan struct{}
	wg         sync.WaitGroup
	procs      sync.WaitGroup // task process waiters
}

type quotaEntry struct {
	role               string
	guarantees, limits map[string]int64 // milli-units
}

// Start starts a master on 127.0.0.1 with a random port and its agents.
func Start(ctx context.Context, cfg Config) (*Master, error) {
	cfg.defaults()
	m := &Master{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "mesostest"),
		id:         newUUID(),
		frameworks: map[string]*framework{},
		removed:    map[string]bool{},
		agentByID:  map[string]*agent{},
		offers:     map[string]*offer{},
		quotas:     map[string]*quotaEntry{},
		hijacked:   map[net.Conn]struct{}{},
		running:    map[*task]struct{}{},
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	if m.cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "mesostest-")
		if err != nil {
			return nil, fmt.Errorf("mesostest: work dir: %w", err)
		}
		m.cfg.WorkDir = d
		m.ownDir = true
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mesostest: listen: %w", err)
	}
	m.addr = l.Addr().(*net.TCPAddr)
	m.ln = newInjectListener(l)
	for i, ac := range cfg.Agents {
		a := &agent{
			m:        m,
			id:       fmt.Sprintf("%s-S%d", m.id, i),
			hostname: ac.Hostname,
			port:     5051 + i,
			total:    newResources(),
			tasks:    map[string]*task{},
		}
		a.total.Scalars["cpus"] = milli(ac.CPUs)
		a.total.Scalars["mem"] = milli(ac.Mem)
		a.total.Scalars["disk"] = milli(ac.Disk)
		a.total.Ranges["ports"] = mergeRanges(ac.Ports)
		var names []string
		for k := range ac.Attributes {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			a.attributes = append(a.attributes, mesos.Attribute{
				Name: k, Type: mesos.TEXT, Text: &mesos.Value_Text{Value: ac.Attributes[k]},
			})
		}
		m.agents = append(m.agents, a)
		m.agentByID[a.id] = a
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/scheduler", m.handleScheduler)
	mux.HandleFunc("/api/v1", m.handleOperator)
	mux.HandleFunc("/master/api/v1/scheduler", m.handleScheduler)
	mux.HandleFunc("/master/api/v1", m.handleOperator)
	mux.HandleFunc("/redirect", m.handleRedirect)
	mux.HandleFunc("/master/redirect", m.handleRedirect)
	mux.HandleFunc("/health", m.handleHealth)
	mux.HandleFunc("/master/health", m.handleHealth)
	mux.HandleFunc("/version", m.handleVersion)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m.redirectNonLeader(w, r) {
			return
		}
		textError(w, http.StatusNotFound, "404 Not Found.")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(m.ln); err != nil && err != http.ErrServerClosed {
			m.log.Error("serve", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		m.allocationLoop()
	}()
	m.log.Info("master started", "url", m.URL(), "agents", len(m.agents), "workdir", m.cfg.WorkDir)
	return m, nil
}

// URL is the master's base URL, e.g. http://127.0.0.1:40123.
func (m *Master) URL() string { return "http://" + m.addr.String() }

// Addr is host:port.
func (m *Master) Addr() string { return m.addr.String() }

// ID is the master's ID (the prefix of agent, framework and offer IDs).
func (m *Master) ID() string { return m.id }

// WorkDir is where the agents keep their sandboxes.
func (m *Master) WorkDir() string { return m.cfg.WorkDir }

// Close stops the master, kills every task process group and removes the
// work directory when Start created it.
func (m *Master) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.stop)
	for _, fw := range m.frameworks {
		if fw.failoverTimer != nil {
			fw.failoverTimer.Stop()
		}
		if fw.stream != nil {
			fw.stream.end(nil)
		}
	}
	var pgids []int
	for _, a := range m.agents {
		if a.pingTimer != nil {
			a.pingTimer.Stop()
		}
		for _, t := range a.tasks {
			if t.retry != nil {
				t.retry.Stop()
			}
		}
	}
	for t := range m.running {
		pgids = append(pgids, t.pid)
	}
	for c := range m.hijacked {
		c.Close()
	}
	m.mu.Unlock()
	for _, pg := range pgids {
		syscall.Kill(-pg, syscall.SIGKILL)
	}
	err := m.srv.Close()
	m.wg.Wait()
	m.procs.Wait()
	if m.ownDir {
		os.RemoveAll(m.cfg.WorkDir)
	}
	return err
}

func (m *Master) allocationLoop() {
	t := time.NewTicker(m.cfg.AllocationInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.wake:
		}
		m.mu.Lock()
		if !m.closed {
			m.allocateLocked()
		}
		m.mu.Unlock()
	}
}

// triggerAllocation runs an allocation cycle soon (after SUBSCRIBE and REVIVE
// the real master offers within milliseconds).
func (m *Master) triggerAllocation() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func newUUID() string {
	b := newUUIDBytes()
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func newUUIDBytes() []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return b
}

func nowSeconds() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// masterInfo is what SUBSCRIBED carries.
func (m *Master) masterInfo() *mesos.MasterInfo {
	ip := m.addr.IP.To4()
	host := m.addr.IP.String()
	port := int32(m.addr.Port)
	return &mesos.MasterInfo{
		ID:       m.id,
		IP:       binary.LittleEndian.Uint32(ip),
		Port:     ptr(uint32(port)),
		PID:      ptr("master@" + host + ":" + strconv.Itoa(int(port))),
		Hostname: ptr(host),
		Version:  ptr("1.12.0"),
		Address:  &mesos.Address{Hostname: ptr(host), IP: ptr(host), Port: port},
		Capabilities: []mesos.MasterInfo_Capability{
			{Type: mesos.MasterInfo_Capability_AGENT_UPDATE},
			{Type: mesos.MasterInfo_Capability_Type(2)}, // AGENT_DRAINING
			{Type: mesos.MasterInfo_Capability_Type(quotaV2)},
		},
	}
}

func textError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

func (m *Master) redirectNonLeader(w http.ResponseWriter, r *http.Request) bool {
	if m.cfg.NoLeader {
		textError(w, http.StatusServiceUnavailable, "No leader elected")
		return true
	}
	if m.cfg.Leader == "" {
		return false
	}
	w.Header().Set("Location", "//"+m.cfg.Leader+r.URL.RequestURI())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

func (m *Master) handleRedirect(w http.ResponseWriter, r *http.Request) {
	leader := m.addr.String()
	if m.cfg.Leader != "" {
		leader = m.cfg.Leader
	}
	if m.cfg.NoLeader {
		textError(w, http.StatusServiceUnavailable, "No leader elected")
		return
	}
	w.Header().Set("Location", "//"+leader)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

func (m *Master) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

const versionJSON = `{"build_date":"2026-11-23 19:02:17","build_time":1795460537.0,"build_user":"","git_branch":"refs/heads/master","git_sha":"c1b42f79d157aa900be5cbb0c1023f1479962aa7","version":"1.12.0"}`

func (m *Master) handleVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(versionJSON)))
	io.WriteString(w, versionJSON)
}

// injectListener lets a connection whose event stream ended go back to the
// HTTP server: the real master keeps the TCP connection open after the
// zero-length chunk, and clients (Go's transport among them) reuse it.
type injectListener struct {
	net.Listener
	inject   chan net.Conn
	accepted chan acceptResult
	done     chan struct{}
	once     sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newInjectListener(l net.Listener) *injectListener {
	il := &injectListener{Listener: l, inject: make(chan net.Conn), accepted: make(chan acceptResult), done: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			select {
			case il.accepted <- acceptResult{c, err}:
			case <-il.done:
				if c != nil {
					c.Close()
				}
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return il
}

func (il *injectListener) Accept() (net.Conn, error) {
	select {
	case c := <-il.inject:
		return c, nil
	case r := <-il.accepted:
		return r.c, r.err
	case <-il.done:
		return nil, net.ErrClosed
	}
}

func (il *injectListener) Close() error {
	il.once.Do(func() { close(il.done) })
	return il.Listener.Close()
}

// give hands a connection back to the server; false when it is shut down.
func (il *injectListener) give(c net.Conn) bool {
	select {
	case il.inject <- c:
		return true
	case <-il.done:
		return false
	}
}

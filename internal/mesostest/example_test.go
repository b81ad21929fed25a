package mesostest_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/internal/mesostest"
)

// A master with three agents in racks, short timeouts for a test, and a
// quota for the job's role set through the operator API.
func Example() {
	m, err := mesostest.Start(context.Background(), mesostest.Config{
		Agents: []mesostest.AgentConfig{
			{Hostname: "127.0.0.1", CPUs: 2, Mem: 4096, Disk: 10000, Ports: []mesostest.Range{{Begin: 31000, End: 31999}}, Attributes: map[string]string{"rack": "r1"}},
			{Hostname: "127.0.0.2", CPUs: 2, Mem: 4096, Disk: 10000, Ports: []mesostest.Range{{Begin: 31000, End: 31999}}, Attributes: map[string]string{"rack": "r2"}},
			{Hostname: "127.0.0.3", CPUs: 2, Mem: 4096, Disk: 10000, Ports: []mesostest.Range{{Begin: 31000, End: 31999}}, Attributes: map[string]string{"rack": "r3"}},
		},
		HeartbeatInterval:  time.Second,
		AgentPingTimeout:   time.Second,
		StatusUpdateRetry:  time.Second,
		MaxFailoverTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	resp, err := http.Post(m.URL()+"/api/v1", "application/json", strings.NewReader(
		`{"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"sluice-job1","limits":{"cpus":{"value":2},"mem":{"value":2048}}}]}}`))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	// The framework under test subscribes to m.URL()+"/api/v1/scheduler";
	// m.KillAgent, m.PartitionAgent, m.RestoreAgent, m.Teardown and
	// m.CloseStream break things on purpose, m.Tasks shows what runs.
	fmt.Println(resp.StatusCode, len(m.AgentIDs()))

	// Output: 200 3
}

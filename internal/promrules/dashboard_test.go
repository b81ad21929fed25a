package promrules

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// dashboard is the part of a Grafana dashboard the test looks at.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any
			Datasource *struct{ Type, UID string }
		}
	}
	Panels []struct {
		ID         int
		Type       string
		Title      string
		GridPos    struct{ H, W, X, Y int }
		Datasource *struct{ Type, UID string }
		Targets    []struct {
			Expr  string
			RefID string `json:"refId"`
		}
	}
}

// TestGrafanaDashboard: docs/grafana/sluice.json is a dashboard of a
// current Grafana with the ${datasource} and job_name variables, the rows
// docs/operating.md describes, panels on the variable data source inside
// the 24-column grid, and every query valid PromQL once Grafana's
// variables are put in.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(docs, "grafana", "sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("docs/grafana/sluice.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 39 {
		t.Errorf("title %q, uid %q, schemaVersion %d (want ≥ 39, Grafana 11 and later)", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		switch v.Name {
		case "datasource":
			if v.Type != "datasource" || v.Query != "prometheus" {
				t.Errorf("variable datasource: type %q, query %v; want a Prometheus data source variable", v.Type, v.Query)
			}
		case "job_name":
			if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" || !strings.Contains(mustJSON(v.Query), "label_values(") {
				t.Errorf("variable job_name: %+v", v)
			}
		}
	}
	if vars["datasource"] == "" || vars["job_name"] == "" {
		t.Fatalf("variables %v: want datasource and job_name", vars)
	}
	var rows []string
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %+v, want ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			e := strings.NewReplacer("$__rate_interval", "5m", "$job_name", "j").Replace(tg.Expr)
			if _, err := parser.ParseExpr(e); err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
			}
			if strings.Contains(tg.Expr, "sluice_") && !strings.Contains(tg.Expr, "sluice_dispatcher_") && !strings.Contains(tg.Expr, `job_name="$job_name"`) {
				t.Errorf("panel %q: %q is not scoped to the job_name variable", p.Title, tg.Expr)
			}
		}
	}
	for _, want := range []string{"Job overview", "Checkpoints", "Kafka", "TaskManagers", "State", "Dispatcher"} {
		if !slices.Contains(rows, want) {
			t.Errorf("no row %q (rows %v)", want, rows)
		}
	}
	if queries < 30 {
		t.Errorf("%d queries", queries)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

package promrules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"gopkg.in/yaml.v3"
)

const docs = "../../docs"

// TestAlertRulesParse: docs/alerts.yml is a valid rule file (rulefmt
// checks each expression with the PromQL parser and each template), and
// every alert has the fields docs/operating.md relies on.
func TestAlertRulesParse(t *testing.T) {
	groups := parseRules(t)
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if r.For == 0 && !slices.Contains([]string{"SluiceTaskManagerLost", "SluiceJobFailed"}, r.Alert) {
				t.Errorf("%s: no for:", r.Alert)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], "docs/operating.md#")
			if !ok {
				t.Errorf("%s: runbook_url %q does not point into docs/operating.md", r.Alert, r.Annotations["runbook_url"])
			} else if !slices.Contains(operatingAnchors(t), anchor) {
				t.Errorf("%s: docs/operating.md has no section #%s", r.Alert, anchor)
			}
		}
	}
	if n < 8 {
		t.Fatalf("%d alerts, want at least 8", n)
	}
}

func parseRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(filepath.Join(docs, "alerts.yml"), false)
	for _, err := range errs {
		t.Errorf("docs/alerts.yml: %v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

// operatingAnchors are the GitHub anchors of docs/operating.md's headings.
func operatingAnchors(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join(docs, "operating.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		h := strings.TrimLeft(l, "#")
		if len(h) == len(l) || !strings.HasPrefix(h, " ") {
			continue
		}
		var a strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(h)) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				a.WriteRune(r)
			case r == ' ':
				a.WriteRune('-')
			}
		}
		out = append(out, a.String())
	}
	return out
}

// unitFile is docs/alerts_test.yml: promtool's unit-test format, the
// parts these tests use.
type unitFile struct {
	RuleFiles          []string      `yaml:"rule_files"`
	EvaluationInterval time.Duration `yaml:"evaluation_interval"`
	Tests              []struct {
		Interval    time.Duration `yaml:"interval"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			EvalTime  time.Duration `yaml:"eval_time"`
			Alertname string        `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertRulesUnit runs docs/alerts_test.yml as `promtool test rules`
// would: the rules are evaluated every evaluation_interval from 0 on the
// input series; an alert fires once its expression held for its for:;
// at each eval_time the firing alerts' labels must be the expected ones.
func TestAlertRulesUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(docs, "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var uf unitFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&uf); err != nil {
		t.Fatalf("docs/alerts_test.yml: %v", err)
	}
	if !slices.Equal(uf.RuleFiles, []string{"alerts.yml"}) || uf.EvaluationInterval <= 0 {
		t.Fatalf("docs/alerts_test.yml: rule_files %v, evaluation_interval %v", uf.RuleFiles, uf.EvaluationInterval)
	}
	rules := map[string]rulefmt.Rule{}
	for _, g := range parseRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				rules[r.Alert] = r
			}
		}
	}
	tested := map[string]map[bool]bool{} // alert -> fired in some case, silent in some case
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for i, tc := range uf.Tests {
		st := &memStorage{}
		for _, s := range tc.InputSeries {
			lset, vals, err := parser.ParseSeriesDesc(s.Series + " " + s.Values)
			if err != nil {
				t.Fatalf("test %d: series %s: %v", i, s.Series, err)
			}
			var samples []chunks.Sample
			for k, v := range vals {
				if !v.Omitted {
					samples = append(samples, fsample{t: int64(k) * tc.Interval.Milliseconds(), f: v.Value})
				}
			}
			st.series = append(st.series, storage.NewListSeries(lset, samples))
		}
		var end time.Duration
		for _, a := range tc.AlertRuleTest {
			end = max(end, a.EvalTime)
		}
		// firing[alert][eval time] are the label sets of its firing alerts.
		firing := map[string]map[time.Duration][]string{}
		for name, r := range rules {
			active := map[string]time.Duration{} // label set -> since
			firing[name] = map[time.Duration][]string{}
			for at := time.Duration(0); at <= end; at += uf.EvaluationInterval {
				q, err := eng.NewInstantQuery(context.Background(), st, nil, r.Expr, time.UnixMilli(0).Add(at))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				res := q.Exec(context.Background())
				if res.Err != nil {
					t.Fatalf("%s at %v: %v", name, at, res.Err)
				}
				vec, err := res.Vector()
				if err != nil {
					t.Fatalf("%s at %v: %v", name, at, err)
				}
				now := map[string]time.Duration{}
				for _, s := range vec {
					b := labels.NewBuilder(s.Metric).Del(labels.MetricName)
					for k, v := range r.Labels {
						b.Set(k, v)
					}
					key := b.Labels().String()
					since, ok := active[key]
					if !ok {
						since = at
					}
					now[key] = since
					if at-since >= time.Duration(r.For) {
						firing[name][at] = append(firing[name][at], key)
					}
				}
				active = now
				q.Close()
			}
		}
		for _, a := range tc.AlertRuleTest {
			if _, ok := rules[a.Alertname]; !ok {
				t.Errorf("test %d: no alert %s in docs/alerts.yml", i, a.Alertname)
				continue
			}
			var want []string
			for _, e := range a.ExpAlerts {
				want = append(want, labels.FromMap(e.ExpLabels).String())
			}
			got := firing[a.Alertname][a.EvalTime]
			sort.Strings(want)
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Errorf("test %d: %s at %v: firing %v, want %v", i, a.Alertname, a.EvalTime, got, want)
			}
			if tested[a.Alertname] == nil {
				tested[a.Alertname] = map[bool]bool{}
			}
			tested[a.Alertname][len(want) > 0] = true
		}
	}
	for name := range rules {
		if !tested[name][true] || !tested[name][false] {
			t.Errorf("%s: docs/alerts_test.yml must show it firing and silent (fired %v, silent %v)", name, tested[name][true], tested[name][false])
		}
	}
}

// fsample is a float sample.
type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                      { return s.t }
func (s fsample) F() float64                    { return s.f }
func (s fsample) H() *histogram.Histogram       { return nil }
func (s fsample) FH() *histogram.FloatHistogram { return nil }
func (s fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample           { return s }

// memStorage is a storage.Queryable over a few series in memory.
type memStorage struct{ series []storage.Series }

func (m *memStorage) Querier(_, _ int64) (storage.Querier, error) { return m, nil }

func (m *memStorage) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
next:
	for _, s := range m.series {
		for _, mt := range ms {
			if !mt.Matches(s.Labels().Get(mt.Name)) {
				continue next
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &seriesSet{s: out, i: -1}
}

func (m *memStorage) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("not implemented")
}

func (m *memStorage) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("not implemented")
}

func (m *memStorage) Close() error { return nil }

type seriesSet struct {
	s []storage.Series
	i int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.s) }
func (s *seriesSet) At() storage.Series                { return s.s[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// Package promrules checks docs/alerts.yml with Prometheus's own rule-file
// parser (model/rulefmt, which also parses every expression as PromQL and
// every annotation as a template) and runs docs/alerts_test.yml, unit
// tests in the form of `promtool test rules`, on Prometheus's PromQL
// engine over an in-memory storage.
//
// It is a module of its own so that Prometheus and its dependencies stay
// out of Sluice's go.mod: only its test imports them, and only `make test`
// builds it.
package promrules

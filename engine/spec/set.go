package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ApplySets applies overrides to a generic job tree (as Parse reads it) and
// returns the new tree. Each override is "KEY=VALUE", like Flink's -D:
//
//   - KEY is a dotted path: "parallelism", "checkpoint.interval".
//     Under "nodes" the next element is a node id, not an index:
//     "nodes.out.params.path". Inside other lists an element is addressed by
//     its index ("nodes.win.params.aggregates.0.field"); the index equal to
//     the list's length appends. Setting a field of an input written as a
//     string ("nodes.win.inputs.0.partition=rebalance") turns it into the
//     object form first.
//   - VALUE is decoded as JSON when it is a JSON value (4, true, null,
//     "quoted", {"a":1}, [1,2]); otherwise it is the plain string (2s,
//     /tmp/out, exactly-once). KEY=null removes the key, so the default
//     applies.
//
// A missing object key is created (the strict decoding that follows rejects
// it if it is not a field); a node id that names no node is an error.
// Overrides apply in order, so a later one wins.
func ApplySets(tree any, sets []string) (any, error) {
	for _, s := range sets {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("--set %q: not valid UTF-8", s)
		}
		key, val, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want KEY=VALUE", s)
		}
		key = strings.TrimSpace(key)
		segs := strings.Split(key, ".")
		for _, seg := range segs {
			if seg == "" {
				return nil, fmt.Errorf("--set %q: bad key %q (want a dotted path like checkpoint.interval)", s, key)
			}
		}
		v := setValue(val)
		var err error
		tree, err = setPath(tree, segs, 0, v)
		if err != nil {
			return nil, fmt.Errorf("--set %s: %w", key, err)
		}
	}
	return tree, nil
}

// setValue is VALUE as JSON if it is a JSON value, else the string itself.
func setValue(s string) any {
	t := strings.TrimSpace(s)
	if t == "" {
		return s
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(t)))
	dec.UseNumber()
	v, err := readJSON(dec, 0)
	if err != nil {
		return s
	}
	if _, err := dec.Token(); err != io.EOF {
		return s // more follows ("2s"): not one JSON value
	}
	return v
}

func setPath(node any, segs []string, i int, v any) (any, error) {
	if i == len(segs) {
		return v, nil
	}
	seg := segs[i]
	where := strings.Join(segs[:i], ".")
	switch t := node.(type) {
	case nil:
		// A missing key or null: make it an object.
		m := map[string]any{}
		c, err := setPath(nil, segs, i+1, v)
		if err != nil {
			return nil, err
		}
		m[seg] = c
		return m, nil
	case map[string]any:
		if i == 0 && seg == "nodes" && len(segs) > 1 {
			nodes, ok := t["nodes"].([]any)
			if !ok {
				return nil, fmt.Errorf("nodes is %s, not a list of nodes", describe(t["nodes"]))
			}
			id := segs[1]
			for k, n := range nodes {
				if m, ok := n.(map[string]any); ok && m["id"] == id {
					c, err := setPath(n, segs, 2, v)
					if err != nil {
						return nil, err
					}
					nodes[k] = c
					return t, nil
				}
			}
			return nil, fmt.Errorf("no node with id %q", id)
		}
		if i == len(segs)-1 && v == nil {
			delete(t, seg) // KEY=null removes the key
			return t, nil
		}
		c, err := setPath(t[seg], segs, i+1, v)
		if err != nil {
			return nil, err
		}
		t[seg] = c
		return t, nil
	case []any:
		k, err := strconv.Atoi(seg)
		if err != nil || k < 0 {
			return nil, fmt.Errorf("%s is a list: %q is not an index", where, seg)
		}
		if k > len(t) {
			return nil, fmt.Errorf("%s has %d elements: index %d is out of range (%d appends)", where, len(t), k, len(t))
		}
		var cur any
		if k < len(t) {
			cur = t[k]
		}
		if str, ok := cur.(string); ok && i == 3 && segs[0] == "nodes" && segs[2] == "inputs" && i+1 < len(segs) {
			// Setting a field of an input written "id" or "id.output":
			// spell it out as an object first.
			from, out, _ := strings.Cut(str, ".")
			m := map[string]any{"from": from}
			if out != "" {
				m["output"] = out
			}
			cur = m
		}
		c, err := setPath(cur, segs, i+1, v)
		if err != nil {
			return nil, err
		}
		if k == len(t) {
			return append(t, c), nil
		}
		t[k] = c
		return t, nil
	default:
		return nil, fmt.Errorf("%s is %s, not an object or list", where, describe(node))
	}
}

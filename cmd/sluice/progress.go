package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/engine/runtime"
)

// Progress of a savepoint, rescale or upgrade while the CLI waits for it
// (GET /v1/jobs/{id}/progress): a bar redrawn in place when stderr is a
// terminal, else a plain line every few seconds and one at the end.
// Progress goes to stderr so that stdout keeps only the answer (the
// savepoint's path), as scripts read it.

// renderBar draws op as one line of at most about width+60 characters:
//
//	savepoint sp-3 [#########-----------]  45%  1.2 MiB/2.6 MiB  1/3 files  ETA 4s
func renderBar(op runtime.ProgressOperation, width int) string {
	if width < 5 {
		width = 5
	}
	pct, known := percent(op)
	fill := 0
	if known {
		fill = int(pct) * width / 100
	}
	var b strings.Builder
	b.WriteString(opName(op))
	b.WriteString(" [")
	b.WriteString(strings.Repeat("#", fill))
	b.WriteString(strings.Repeat("-", width-fill))
	b.WriteString("] ")
	if known {
		fmt.Fprintf(&b, "%3d%%", pct)
	} else {
		b.WriteString("  ?%")
	}
	fmt.Fprintf(&b, "  %s/%s  %d/%d files", humanBytes(op.BytesDone), humanTotal(op.BytesTotal), op.FilesDone, op.FilesTotal)
	b.WriteString("  ")
	b.WriteString(etaText(op))
	return b.String()
}

// plainLine describes op in words, for a log or a pipe.
func plainLine(op runtime.ProgressOperation) string {
	pct, known := percent(op)
	p := "?%"
	if known {
		p = fmt.Sprintf("%d%%", pct)
	}
	s := fmt.Sprintf("%s: %s %s, %s of %s, %d of %d files, %s", opName(op), op.State, p,
		humanBytes(op.BytesDone), humanTotal(op.BytesTotal), op.FilesDone, op.FilesTotal, etaText(op))
	if op.Error != "" {
		s += ": " + op.Error
	}
	return s
}

func opName(op runtime.ProgressOperation) string {
	s := op.Kind + " " + op.ID
	if op.Phase != "" {
		s += " (" + op.Phase + ")"
	}
	return s
}

// percent is how much is done, by bytes (by files while no byte total is
// known); false when neither is known.
func percent(op runtime.ProgressOperation) (int64, bool) {
	if op.State == runtime.ProgressDone {
		return 100, true
	}
	var p int64
	switch {
	case op.BytesTotal > 0:
		p = op.BytesDone * 100 / op.BytesTotal
	case op.FilesTotal > 0:
		p = op.FilesDone * 100 / op.FilesTotal
	default:
		return 0, false
	}
	return min(max(p, 0), 100), true
}

func etaText(op runtime.ProgressOperation) string {
	switch {
	case op.State == runtime.ProgressDone:
		return "done"
	case op.State == runtime.ProgressFailed:
		return "failed"
	case op.EtaMs < 0:
		return "ETA ?"
	}
	d := time.Duration(op.EtaMs) * time.Millisecond
	switch {
	case d >= time.Minute:
		d = d.Round(time.Second)
	case d >= time.Second:
		d = d.Round(100 * time.Millisecond)
	}
	return "ETA " + d.String()
}

func humanTotal(n int64) string {
	if n <= 0 {
		return "?"
	}
	return humanBytes(n)
}

// humanBytes writes n in binary units, three significant digits or so.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 5 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i-1])
}

// isTerminal says whether f is a terminal (a character device that is
// not /dev/null).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// progressWatch shows the newest operation of kind that started since
// (a little before: another machine's clock) until stop is called.
type progressWatch struct {
	fetch func(ctx context.Context) ([]runtime.ProgressOperation, error)
	out   io.Writer
	tty   bool
	every time.Duration
	kind  string
	since time.Time

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	last   *runtime.ProgressOperation
	drawn  bool   // a bar is on the line (tty)
	line   string // the last plain line, not repeated
}

func (p *progressWatch) pick(ops []runtime.ProgressOperation) *runtime.ProgressOperation {
	for i := range ops { // newest first
		if ops[i].Kind == p.kind && !ops[i].StartedAt.Before(p.since.Add(-2*time.Second)) {
			return &ops[i]
		}
	}
	return nil
}

// start polls in the background, after one request at once: the
// dispatcher follows a job's rescale or upgrade from a job's first
// progress request on, and the operation may be over before the first tick.
func (p *progressWatch) start() {
	first, cancelFirst := context.WithTimeout(context.Background(), 2*time.Second)
	if ops, err := p.fetch(first); err == nil {
		if op := p.pick(ops); op != nil && op.State == runtime.ProgressRunning {
			p.show(op, false)
		}
	}
	cancelFirst()
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// An error (an older dispatcher, a busy one): the command
			// goes on without progress.
			ops, err := p.fetch(ctx)
			if op := p.pick(ops); err == nil && op != nil {
				p.show(op, false)
			}
		}
	}()
}

func (p *progressWatch) show(op *runtime.ProgressOperation, final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = op
	if p.tty {
		fmt.Fprintf(p.out, "\r%s\x1b[K", renderBar(*op, 30))
		p.drawn = true
		if final {
			fmt.Fprintln(p.out)
			p.drawn = false
		}
		return
	}
	if l := plainLine(*op); l != p.line {
		p.line = l
		fmt.Fprintln(p.out, l)
	}
}

// stop ends the polling and shows the operation's final state (one more
// request), ending the bar's line.
func (p *progressWatch) stop() {
	p.cancel()
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ops, err := p.fetch(ctx); err == nil {
		if op := p.pick(ops); op != nil {
			p.show(op, true)
			return
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.out)
	}
}

// watchProgress starts showing the progress of job id's operation of
// kind on stderr (nothing with --json). The caller calls its stop once
// the request it waits for answered.
func (c *client) watchProgress(id, kind string, every time.Duration) *progressWatch {
	var out io.Writer = os.Stderr
	if c.json {
		out = io.Discard
	}
	tty := !c.json && isTerminal(os.Stderr)
	if every <= 0 {
		every = 3 * time.Second
		if tty {
			every = 200 * time.Millisecond
		}
	}
	w := &progressWatch{out: out, tty: tty, every: every, kind: kind, since: time.Now(),
		fetch: func(ctx context.Context) ([]runtime.ProgressOperation, error) { return c.progress(ctx, id) }}
	w.start()
	return w
}

// waitEnd waits until the operation has ended (or ctx has), showing its
// progress, and returns it; nil when it was never seen.
func (p *progressWatch) waitEnd(ctx context.Context) *runtime.ProgressOperation {
	for {
		p.mu.Lock()
		last := p.last
		p.mu.Unlock()
		if last != nil && last.State != runtime.ProgressRunning {
			return last
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(p.every):
		}
		// The watch's own polling shows it; this one only looks.
		if ops, err := p.fetch(ctx); err == nil {
			if op := p.pick(ops); op != nil && op.State != runtime.ProgressRunning {
				return op
			}
		}
	}
}

// progress is GET /v1/jobs/{id}/progress.
func (c *client) progress(ctx context.Context, id string) ([]runtime.ProgressOperation, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+jobPath(id, "/progress"), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET progress: %s", resp.Status)
	}
	var rep struct {
		Operations []runtime.ProgressOperation `json:"operations"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&rep); err != nil {
		return nil, err
	}
	return rep.Operations, nil
}

// progressFlag is --progress-every of the commands that wait.
func (c *client) progressFlag() *time.Duration {
	return c.fs.Duration("progress-every", 0, "how often to show the progress on stderr (default: 3s, 0.2s on a terminal)")
}

//go:build !linux

package cputime

import "time"

// Thread is not measured outside Linux.
func Thread() time.Duration { return 0 }

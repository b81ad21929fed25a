package main

import (
	"time"

	"github.com/sluice-stream/sluice/internal/cputime"
)

func threadCPU() time.Duration { return cputime.Thread() }

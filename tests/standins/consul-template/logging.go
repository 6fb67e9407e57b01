package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"strings"
)

// logLevels are the levels consul-template understands, lowest first.
var logLevels = []string{"TRACE", "DEBUG", "INFO", "WARN", "ERR"}

// levelFilter drops log lines whose "[LEVEL]" tag is below the minimum.
// Lines without a recognised tag are always written, like the real tool's
// filter does.
type levelFilter struct {
	w   io.Writer
	min int
}

func (f *levelFilter) Write(p []byte) (int, error) {
	if lvl := lineLevel(p); lvl >= 0 && lvl < f.min {
		return len(p), nil
	}
	return f.w.Write(p)
}

func lineLevel(line []byte) int {
	start := bytes.IndexByte(line, '[')
	if start < 0 {
		return -1
	}
	end := bytes.IndexByte(line[start:], ']')
	if end < 0 {
		return -1
	}
	return levelIndex(string(line[start+1 : start+end]))
}

func levelIndex(name string) int {
	for i, l := range logLevels {
		if l == name {
			return i
		}
	}
	return -1
}

// newLogger returns a logger in consul-template's format, for example
//
//	2026/01/01 00:00:00.000000 [INFO] (runner) rendered "in" => "out"
//
// (UTC, microseconds) that only writes lines at or above level.
func newLogger(w io.Writer, level string) (*log.Logger, error) {
	min := levelIndex(strings.ToUpper(level))
	if min < 0 {
		return nil, fmt.Errorf("invalid log level %q, valid log levels are %s",
			level, strings.Join(logLevels, ", "))
	}
	flags := log.Ldate | log.Ltime | log.Lmicroseconds | log.LUTC
	return log.New(&levelFilter{w: w, min: min}, "", flags), nil
}

package main

import (
	"fmt"
	"log/slog"
	"os"
)

func newLogger(level, format string) (*slog.Logger, error) {
	l, _, err := newLeveledLogger(level, format)
	return l, err
}

// newLeveledLogger is newLogger with its level, which the caller may
// change later.
func newLeveledLogger(level, format string) (*slog.Logger, *slog.LevelVar, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	levels := new(slog.LevelVar)
	levels.Set(lv)
	l, err := handlerLogger(format, &slog.HandlerOptions{Level: levels})
	return l, levels, err
}

func handlerLogger(format string, opts *slog.HandlerOptions) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

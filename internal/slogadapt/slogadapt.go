// Package slogadapt hands log/slog loggers to libraries that want hclog
// (hashicorp/raft) or a standard *log.Logger (hashicorp/memberlist).
package slogadapt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// HCLog adapts an slog.Logger to hclog.Logger.
func HCLog(l *slog.Logger, name string) hclog.Logger {
	return &hcl{l: l.With("lib", name), name: name}
}

type hcl struct {
	l    *slog.Logger
	name string
	args []interface{}
}

func toSlog(level hclog.Level) slog.Level {
	switch {
	case level <= hclog.Debug:
		return slog.LevelDebug
	case level == hclog.Info:
		return slog.LevelInfo
	case level == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// shutdownNoise are errors hashicorp/raft logs when its own transport shuts
// down (a node stopping, as every rolling restart does): message and error
// text. They are logged at debug, so that error-log alerts stay for errors.
var shutdownNoise = []struct{ msg, err string }{
	{"failed to decode incoming command", "transport shutdown"},
}

func (h *hcl) Log(level hclog.Level, msg string, args ...interface{}) {
	lv := toSlog(level)
	if lv >= slog.LevelError && isShutdownNoise(msg, args) {
		lv = slog.LevelDebug
	}
	if !h.l.Enabled(context.Background(), lv) {
		return
	}
	h.l.Log(context.Background(), lv, msg, formatted(args)...)
}

func isShutdownNoise(msg string, args []interface{}) bool {
	for _, n := range shutdownNoise {
		if msg != n.msg {
			continue
		}
		for i := 0; i+1 < len(args); i += 2 {
			if k, _ := args[i].(string); k == "error" && strings.Contains(fmt.Sprint(args[i+1]), n.err) {
				return true
			}
		}
	}
	return false
}

// formatted renders hclog.Fmt values (a format and its arguments, which
// hclog formats itself) as the strings hclog would print.
func formatted(args []interface{}) []interface{} {
	var out []interface{} // a copy, made only if something is formatted: args is the caller's
	for i, a := range args {
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				if out == nil {
					out = append([]interface{}(nil), args...)
				}
				out[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	if out == nil {
		return args
	}
	return out
}
func (h *hcl) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }
func (h *hcl) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }
func (h *hcl) Info(msg string, args ...interface{})  { h.Log(hclog.Info, msg, args...) }
func (h *hcl) Warn(msg string, args ...interface{})  { h.Log(hclog.Warn, msg, args...) }
func (h *hcl) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }
func (h *hcl) IsTrace() bool                         { return false }
func (h *hcl) IsDebug() bool                         { return h.l.Enabled(context.Background(), slog.LevelDebug) }
func (h *hcl) IsInfo() bool                          { return h.l.Enabled(context.Background(), slog.LevelInfo) }
func (h *hcl) IsWarn() bool                          { return h.l.Enabled(context.Background(), slog.LevelWarn) }
func (h *hcl) IsError() bool                         { return h.l.Enabled(context.Background(), slog.LevelError) }
func (h *hcl) ImpliedArgs() []interface{}            { return h.args }
func (h *hcl) With(args ...interface{}) hclog.Logger {
	return &hcl{l: h.l.With(formatted(args)...), name: h.name, args: append(append([]interface{}{}, h.args...), args...)}
}
func (h *hcl) Name() string { return h.name }
func (h *hcl) Named(name string) hclog.Logger {
	return &hcl{l: h.l.With("sub", name), name: h.name + "." + name, args: h.args}
}
func (h *hcl) ResetNamed(name string) hclog.Logger { return &hcl{l: h.l, name: name, args: h.args} }
func (h *hcl) SetLevel(hclog.Level)                {}
func (h *hcl) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}
func (h *hcl) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return StdLog(h.l)
}
func (h *hcl) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return &levelWriter{l: h.l} }

// StdLog returns a *log.Logger whose lines go to l. A leading "[LEVEL]" tag,
// as memberlist writes, picks the slog level.
func StdLog(l *slog.Logger) *log.Logger {
	return log.New(&levelWriter{l: l}, "", 0)
}

type levelWriter struct{ l *slog.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(bytes.TrimRight(p, "\n")))
	lv := slog.LevelInfo
	for tag, level := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError} {
		if strings.HasPrefix(msg, tag) {
			lv, msg = level, strings.TrimSpace(strings.TrimPrefix(msg, tag))
			break
		}
	}
	w.l.Log(context.Background(), lv, msg)
	return len(p), nil
}

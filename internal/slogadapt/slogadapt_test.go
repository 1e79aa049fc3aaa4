package slogadapt

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// hashicorp/raft logs some values as hclog.Fmt (a format and its
// arguments); they come out formatted, not as the format verb.
func TestHCLogFormatsFmtValues(t *testing.T) {
	var buf bytes.Buffer
	l := HCLog(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	servers := []struct{ ID string }{{"a1"}}
	l.Info("initial configuration", "servers", hclog.Fmt("%+v", servers), "index", 3)
	out := buf.String()
	if want := "servers=" + fmt.Sprintf("%+v", servers); strings.Contains(out, "%+v") || !strings.Contains(out, want) || !strings.Contains(out, "index=3") {
		t.Fatalf("logged %q", out)
	}
}

// Raft's transport logs its own shutdown as an error on every node stop;
// it comes out at debug. The same message with another error stays.
func TestHCLogShutdownNoiseAtDebug(t *testing.T) {
	var buf bytes.Buffer
	l := HCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	l.Error("failed to decode incoming command", "error", errors.New("transport shutdown"))
	if buf.Len() != 0 {
		t.Fatalf("shutdown noise logged at info: %q", buf.String())
	}
	l.Error("failed to decode incoming command", "error", errors.New("unexpected EOF"))
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("a real decode error was not logged as one: %q", buf.String())
	}
}

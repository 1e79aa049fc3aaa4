package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seqd/seqd/internal/cliflag"
)

func TestStartConfigAdvertiseHost(t *testing.T) {
	file := filepath.Join(t.TempDir(), "seqd.toml")
	if err := os.WriteFile(file, []byte("id = \"arb1\"\nadvertise_host = \"arb1.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--id", "a1"}, ""},
		{[]string{"--advertise-host", "10.0.0.7"}, "10.0.0.7"},
		{[]string{"--advertise-host=2001:db8::7"}, "2001:db8::7"},
		{[]string{"--config", file}, "arb1.example"},
		{[]string{"--config", file, "--advertise-host", "10.0.0.7"}, "10.0.0.7"},
	} {
		cfg, err := startConfig(tc.args)
		if err != nil {
			t.Errorf("seqd start %q: %v", tc.args, err)
			continue
		}
		if cfg.AdvertiseHost != tc.want {
			t.Errorf("seqd start %q: advertise host %q, want %q", tc.args, cfg.AdvertiseHost, tc.want)
		}
	}
}

func TestStartConfigRefusesBadAdvertiseHost(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--advertise-host", ""}, "--advertise-host is empty"},
		{[]string{"--advertise-host="}, "--advertise-host is empty"},
		{[]string{"--advertise-host", "0.0.0.0"}, `--advertise-host "0.0.0.0" means every interface`},
		{[]string{"--advertise-host", "::"}, `--advertise-host "::" means every interface`},
		{[]string{"--advertise-host", "10.0.0.1:7100"}, `--advertise-host "10.0.0.1:7100" has a port`},
		{[]string{"--advertise-host", "arb1:7100"}, `has a port`},
		{[]string{"--advertise-host", "arb 1"}, "neither an IP address nor a host name"},
		{[]string{"--advertise-host", "10.0.0.256"}, "neither an IP address nor a host name"},
		{[]string{"--advertise-host", strings.Repeat("h", 1<<20)}, "is 1048576 bytes"},
		{[]string{"--advertise-host", "a", "--advertise-host", "b"}, "--advertise-host is given twice"},
	} {
		_, err := startConfig(tc.args)
		var ue *cliflag.UsageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("seqd start %.60q: %v, want a usage error saying %q", tc.args, err, tc.want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("seqd start %.60q: a %d-byte message", tc.args, len(err.Error()))
		}
	}
}

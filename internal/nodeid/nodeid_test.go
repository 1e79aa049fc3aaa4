package nodeid

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, id := range []string{"a", "alloc1", "s1-r3", "arb.2_x", strings.Repeat("a", 63)} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q): %v", id, err)
		}
	}
	for id, want := range map[string]string{
		"":                         "empty",
		"bad id":                   `"bad id" is not valid`,
		"-a":                       "is not valid",
		strings.Repeat("a", 64):    "is 64 bytes",
		strings.Repeat("x", 1<<20): "is 1048576 bytes",
	} {
		err := Validate(id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%.20q): %v, want it to say %q", id, err, want)
		}
		// The message never carries a huge id back whole.
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("Validate(%.20q): a %d-byte message", id, len(err.Error()))
		}
	}
}

func TestValidateAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:7300", "[::1]:1", "arb1.example:65535", "10.0.0.1:7301"} {
		if err := ValidateAddr("raft_addr", a); err != nil {
			t.Errorf("ValidateAddr(%q): %v", a, err)
		}
	}
	for a, want := range map[string]string{
		"":                         "is not host:port",
		"not an address":           "is not host:port",
		"foo:0":                    "the port must be 1..65535",
		"bar:99999999":             "the port must be 1..65535",
		"bar:http":                 "the port must be 1..65535",
		":7301":                    "has no host, and other nodes cannot dial it",
		"0.0.0.0:7100":             "0.0.0.0 means every interface, and other nodes cannot dial it",
		"[::]:7100":                ":: means every interface, and other nodes cannot dial it",
		"[::ffff:0.0.0.0]:7100":    "other nodes cannot dial it",
		"[0:0:0:0:0:0:0:0]:7100":   "other nodes cannot dial it",
		strings.Repeat("h", 1<<20): "is 1048576 bytes",
	} {
		err := ValidateAddr("raft_addr", a)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "raft_addr") {
			t.Errorf("ValidateAddr(%.20q): %v, want it to name raft_addr and say %q", a, err, want)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("ValidateAddr(%.20q): a %d-byte message", a, len(err.Error()))
		}
	}
}

func TestUnspecified(t *testing.T) {
	for host, want := range map[string]bool{
		"": true, "0.0.0.0": true, "::": true, "0:0:0:0:0:0:0:0": true, "::ffff:0.0.0.0": true, "::%eth0": true,
		"127.0.0.1": false, "::1": false, "10.0.0.1": false, "arb1": false, "0.0.0.1": false, "[::]": false,
	} {
		if got := Unspecified(host); got != want {
			t.Errorf("Unspecified(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestValidateHost(t *testing.T) {
	label := strings.Repeat("a", 63)
	longName := strings.Join([]string{label, label, label, strings.Repeat("b", 61)}, ".") // 253 bytes
	for _, h := range []string{"10.0.0.1", "127.0.0.2", "::1", "2001:db8::7", "fe80::1%eth0", "arb1", "arb1.example", "arb1.example.",
		"seqd_arb1", "seqd-arb-1.dc1.internal", "ARB1.Example", label, longName} {
		if err := ValidateHost("--advertise-host", h); err != nil {
			t.Errorf("ValidateHost(%q): %v", h, err)
		}
	}
	for h, want := range map[string]string{
		"":                                   "is empty",
		strings.Repeat("h", 1<<20):           "is 1048576 bytes",
		longName + "b":                       "is 254 bytes",
		"0.0.0.0":                            "means every interface, and other nodes cannot dial it",
		"::":                                 "means every interface",
		"::ffff:0.0.0.0":                     "means every interface",
		"10.0.0.1:7100":                      "has a port; give the host only",
		"arb1:7100":                          "has a port",
		"[::1]:7100":                         "has a port",
		":7100":                              "has a port",
		"[::1]":                              "without brackets",
		"arb 1":                              "neither an IP address nor a host name",
		" arb1":                              "neither an IP address nor a host name",
		"arb1\n":                             "neither an IP address nor a host name",
		"arb1..example":                      "neither an IP address nor a host name",
		".arb1":                              "neither an IP address nor a host name",
		"-arb1":                              "neither an IP address nor a host name",
		"arb1-.example":                      "neither an IP address nor a host name",
		label + "a.example":                  "neither an IP address nor a host name",
		"10.0.0.256":                         "neither an IP address nor a host name",
		"10.0.0":                             "neither an IP address nor a host name",
		"7100":                               "neither an IP address nor a host name",
		"http://arb1":                        "neither an IP address nor a host name",
		"arb1/x":                             "neither an IP address nor a host name",
		"ärb1":                               "neither an IP address nor a host name",
		"[::1":                               "neither an IP address nor a host name",
		"arb1,arb2":                          "neither an IP address nor a host name",
		strings.Repeat("a", 64) + ".example": "neither an IP address nor a host name",
	} {
		err := ValidateHost("--advertise-host", h)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--advertise-host") {
			t.Errorf("ValidateHost(%.20q): %v, want it to name --advertise-host and say %q", h, err, want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("ValidateHost(%.20q): a %d-byte message", h, len(err.Error()))
		}
	}
}

func TestResolveIP(t *testing.T) {
	for in, want := range map[string]string{"": "", "10.0.0.1": "10.0.0.1", "::1": "::1"} {
		if got, err := ResolveIP(in); err != nil || got != want {
			t.Errorf("ResolveIP(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

package bootstrap

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestStatic(t *testing.T) {
	ctx := context.Background()
	got, err := Static([]string{"10.0.0.1:5001", "[fd00::1]:5001", "node-2:5001"})(ctx)
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:5001", "[fd00::1]:5001", "node-2:5001"}) {
		t.Fatalf("Static = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.1", ":5001", "10.0.0.1:0", "10.0.0.1:http", "10.0.0.1:70000", "fd00::1:5001"} {
		got, err := Static([]string{"10.0.0.1:5001", bad})(ctx)
		if err == nil {
			t.Errorf("Static accepted %q", bad)
		}
		if !slices.Equal(got, []string{"10.0.0.1:5001"}) {
			t.Errorf("Static(%q) dropped the valid address: %v", bad, got)
		}
	}
	// The caller cannot change what later calls return.
	fn := Static([]string{"10.0.0.1:5001"})
	a, _ := fn(ctx)
	a[0] = "changed"
	if b, _ := fn(ctx); b[0] != "10.0.0.1:5001" {
		t.Fatal("Static shares its slice")
	}
}

func TestDNS(t *testing.T) {
	var asked []string
	lookup := func(_ context.Context, host string) ([]string, error) {
		asked = append(asked, host)
		switch host {
		case "shoal.shoal.svc.cluster.local":
			return []string{"10.0.0.2", "fd00::2", "10.0.0.1", "10.0.0.2"}, nil
		}
		return nil, errors.New("no such host")
	}
	got, err := DNS("shoal.shoal.svc.cluster.local", "5001", lookup)(context.Background())
	want := []string{"10.0.0.1:5001", "10.0.0.2:5001", "[fd00::2]:5001"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("DNS = %v, %v; want %v", got, err, want)
	}
	if _, err := DNS("missing", "5001", lookup)(context.Background()); err == nil {
		t.Fatal("DNS hid a failed lookup")
	}
	if len(asked) != 2 {
		t.Fatalf("asked %v", asked)
	}
}

func TestCombine(t *testing.T) {
	ctx := context.Background()
	ok1 := Static([]string{"10.0.0.1:5001", "10.0.0.2:5001"})
	ok2 := Static([]string{"10.0.0.2:5001", "10.0.0.3:5001"})
	fail := func(context.Context) ([]string, error) { return nil, errors.New("down") }

	got, err := Combine(0, ok1, fail, ok2, nil)(ctx)
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001"}) {
		t.Fatalf("Combine = %v, %v", got, err)
	}
	if _, err := Combine(0, fail, fail)(ctx); err == nil {
		t.Fatal("Combine of failures succeeded")
	}
	if got, err := Combine(0)(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Combine() = %v, %v", got, err)
	}
}

// TestCombineSlowSource: a source that hangs (a DNS server that does not
// answer) is cut at the timeout, and the others' answer is used; a source
// that answers is never cut.
func TestCombineSlowSource(t *testing.T) {
	hang := func(ctx context.Context) ([]string, error) { <-ctx.Done(); return nil, ctx.Err() }
	ok := Static([]string{"10.0.0.1:5001"})
	// Without the timeout the hanging source would never return.
	got, err := Combine(100*time.Millisecond, hang, ok)(context.Background())
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:5001"}) {
		t.Fatalf("Combine = %v, %v", got, err)
	}
	if _, err := Combine(100*time.Millisecond, hang)(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("only a hanging source: err %v", err)
	}
}

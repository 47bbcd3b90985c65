package bootstrap

import (
	"context"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func slice(name, service string, typ discoveryv1.AddressType, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shoal",
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: typ,
		Endpoints:   eps,
	}
}

func ep(ready, terminating bool, addrs ...string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  addrs,
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Terminating: &terminating},
	}
}

func TestKubernetesFollowsEndpointSlices(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		slice("shoal-v4", "shoal", discoveryv1.AddressTypeIPv4,
			ep(true, false, "10.0.0.1"),
			ep(false, false, "10.0.0.2"), // not ready yet: still a useful peer
			ep(true, true, "10.0.0.9"),   // terminating: going away
		),
		slice("shoal-v6", "shoal", discoveryv1.AddressTypeIPv6, ep(true, false, "fd00::1")),
		slice("shoal-fqdn", "shoal", discoveryv1.AddressTypeFQDN, ep(true, false, "node.example")),
		slice("other", "not-shoal", discoveryv1.AddressTypeIPv4, ep(true, false, "10.9.9.9")),
	)
	k := NewKubernetes(client.DiscoveryV1().EndpointSlices("shoal"), "shoal", "shoal", "5001", nil)
	fn := k.Func()
	if got, err := fn(ctx); err != nil || len(got) != 0 {
		t.Fatalf("before Run: %v, %v", got, err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()

	expect := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := fn(ctx)
			if err == nil && slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Func = %v, %v; want %v", what, got, err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	expect("initial", "10.0.0.1:5001", "10.0.0.2:5001", "[fd00::1]:5001")

	// A new node appears: found without restarting anything.
	slices4 := client.DiscoveryV1().EndpointSlices("shoal")
	s, err := slices4.Get(ctx, "shoal-v4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Endpoints = append(s.Endpoints, ep(false, false, "10.0.0.3"))
	if _, err := slices4.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("after update", "10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001", "[fd00::1]:5001")

	// A second slice for the same Service (large Services are split).
	if _, err := slices4.Create(ctx, slice("shoal-v4-b", "shoal", discoveryv1.AddressTypeIPv4, ep(true, false, "10.0.1.1")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("after create", "10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001", "10.0.1.1:5001", "[fd00::1]:5001")

	if err := slices4.Delete(ctx, "shoal-v6", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("after delete", "10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001", "10.0.1.1:5001")

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx was cancelled")
	}
}

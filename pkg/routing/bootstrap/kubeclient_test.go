package bootstrap

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/rest"
)

// The REST client that production uses, against a server that speaks the API
// server's list and watch protocol for EndpointSlices.
func TestRESTSlicesListAndWatch(t *testing.T) {
	v4 := slice("shoal-v4", "shoal", discoveryv1.AddressTypeIPv4, ep(true, false, "10.0.0.1"))
	v4.ResourceVersion = "1"
	added := slice("shoal-more", "shoal", discoveryv1.AddressTypeIPv4, ep(true, false, "10.0.0.7"))
	added.ResourceVersion = "2"
	var sawSelector bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/shoal/endpointslices" {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("labelSelector") == discoveryv1.LabelServiceName+"=shoal" {
			sawSelector = true
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			json.NewEncoder(w).Encode(map[string]any{
				"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
				"metadata": map[string]any{"resourceVersion": "1"}, "items": []any{v4},
			})
			return
		}
		added.Kind, added.APIVersion = "EndpointSlice", "discovery.k8s.io/v1"
		json.NewEncoder(w).Encode(map[string]any{"type": "ADDED", "object": added})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	rs, err := newRESTSlices(&rest.Config{Host: srv.URL}, "shoal")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := NewKubernetes(rs, "shoal", "shoal", "5001", nil)
	go k.Run(ctx)
	want := []string{"10.0.0.1:5001", "10.0.0.7:5001"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := k.Func()(ctx)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Func = %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !sawSelector {
		t.Error("the label selector for the Service was not sent")
	}
}

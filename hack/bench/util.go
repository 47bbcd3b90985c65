package main

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

var quickClient = &http.Client{Timeout: 10 * time.Second}

// blobCode is the status of a digest-only blob request to a node.
func blobCode(n *node, d string) int {
	resp, err := quickClient.Get(fmt.Sprintf("%s/v2/bench/probe/blobs/%s", n.shoal.RegistryURL, d))
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

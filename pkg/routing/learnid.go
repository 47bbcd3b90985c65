package routing

import (
	"context"
	"fmt"
	"net"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	ptpnet "github.com/libp2p/go-libp2p/p2p/net/pnet"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	mss "github.com/multiformats/go-multistream"
)

// learnPeerID finds out which peer listens at a p2p "HOST:PORT", so that
// users never have to type peer IDs. It does what the libp2p upgrader does on
// a dial, up to the security handshake, then hangs up: TCP connect, the
// private-network wrapper when there is a secret, multistream-select of
// /noise, and a Noise handshake as initiator that accepts whatever peer
// answers. The identity the remote proves in that handshake (its static key
// signed by its libp2p key) is what we return.
//
// noise.Transport.SecureOutbound insists on an expected peer ID (an empty one
// fails with ErrPeerIDMismatch before the remote's signature is checked), so
// we use a session transport with DisablePeerIDCheck, which still verifies
// the signature. The caller then dials with host.Connect and that ID, which
// authenticates the peer once more; a MITM here could at worst make us dial
// the wrong ID, which then fails.
func learnPeerID(ctx context.Context, st *noise.SessionTransport, psk pnet.PSK, addr string) (peer.ID, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	// Close the socket when ctx ends, whatever step we are blocked in.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	conn := raw
	if len(psk) > 0 {
		if conn, err = ptpnet.NewProtectedConn(psk, raw); err != nil {
			return "", err
		}
	}
	if _, err := mss.SelectOneOf([]protocol.ID{noise.ID}, conn); err != nil {
		return "", fmt.Errorf("security negotiation: %w", err)
	}
	sc, err := st.SecureOutbound(ctx, conn, "")
	if err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	id := sc.RemotePeer()
	sc.Close()
	if id == "" {
		return "", fmt.Errorf("handshake: no peer ID")
	}
	return id, nil
}

// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * cgroup/connect4 and cgroup/connect6: deny, exempt the proxy, send
 * port 53 to the DNS listener and every TCP port to the transparent
 * listener (when the socket listening there is the proxy's, each); refuse
 * other UDP. The original destination is recorded in
 * the socket's local storage for the egress program (TCP, on the SYN)
 * and recvmsg/getpeername.
 */
#include "iron_sock_addr.h"

SEC("cgroup/connect4")
int iron_connect4(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	__u16 port = (__u16)ctx->user_port;
	__u32 a[4];
	enum iron_action act;

	iron_v4_mapped(a, ctx->user_ip4);
	act = iron_decide(ctx, cfg, ctx->protocol, a, port, iron_dns_ok4(cfg));
	if (act == IRON_PASS)
		return IRON_ALLOW;
	if (act == IRON_FAIL || !cfg)
		return IRON_REFUSE;
	if (act == IRON_TO_LISTENER && !iron_listener_ours(ctx, cfg, 1))
		return IRON_REFUSE;
	if (act == IRON_TO_DNS &&
	    !iron_dns_listener_ours(ctx, cfg, ctx->protocol, 1))
		return IRON_REFUSE;
	iron_record(ctx, a, port, IRON_AF_INET);
	if (act == IRON_TO_DNS) {
		ctx->user_ip4 = cfg->dns_v4;
		ctx->user_port = cfg->dns_v4_port;
		iron_count(IRON_CNT_DNS_REDIRECTED);
	} else {
		ctx->user_ip4 = cfg->listen_v4;
		ctx->user_port = cfg->listen_v4_port;
		iron_count(IRON_CNT_REDIRECTED);
	}
	return IRON_ALLOW;
}

SEC("cgroup/connect6")
int iron_connect6(struct bpf_sock_addr *ctx)
{
	struct iron_config *cfg = iron_cfg_load();
	__u16 port = (__u16)ctx->user_port;
	__u32 a[4];
	enum iron_action act;
	int mapped;

	iron_get_ip6(ctx, a);
	mapped = iron_is_v4_mapped(a);
	act = iron_decide(ctx, cfg, ctx->protocol, a, port,
			  iron_dns_ok6(cfg, mapped));
	if (act == IRON_PASS)
		return IRON_ALLOW;
	if (act == IRON_FAIL || !cfg)
		return IRON_REFUSE;
	if (act == IRON_TO_LISTENER &&
	    !iron_listener_ours(ctx, cfg,
				mapped || !(cfg->flags & IRON_F_LISTEN_V6)))
		return IRON_REFUSE;
	if (act == IRON_TO_DNS &&
	    !iron_dns_listener_ours(ctx, cfg, ctx->protocol, mapped))
		return IRON_REFUSE;
	iron_record(ctx, a, port, IRON_AF_INET6);
	iron_redirect6(ctx, cfg, mapped, act == IRON_TO_DNS);
	iron_count(act == IRON_TO_DNS ? IRON_CNT_DNS_REDIRECTED
				      : IRON_CNT_REDIRECTED);
	return IRON_ALLOW;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#!/bin/sh
# busybox udhcpc event script of kiln's stage-1 initramfs: configures
# $interface from the lease that udhcpc passes in its environment ($ip,
# $mask, $broadcast, $router, $dns, $domain), writes /etc/resolv.conf and
# records the lease in /run/kiln/dhcp.env for the system that boots next
# (the address and route stay configured after the switch of root).
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	for r in $router; do
		ip route add default via "$r" dev "$interface" && break
	done
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for d in $dns; do
		echo "nameserver $d" >>/etc/resolv.conf
	done
	# udhcpc checked these: addresses, numbers and the interface name.
	{
		echo "interface=$interface"
		echo "ip=$ip"
		echo "mask=${mask:-24}"
		echo "router='$router'"
		echo "dns='$dns'"
		echo "serverid=$serverid"
		echo "lease=$lease"
	} >/run/kiln/dhcp.env
	echo "kiln: dhcp: $interface $ip/${mask:-24} router ${router:-none}"
	;;
esac
exit 0

#!/bin/sh
# busybox udhcpc event script: configures $interface from the lease that
# udhcpc passes in its environment ($ip, $mask, $broadcast, $router, $dns).
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
	for d in $dns; do
		echo "nameserver $d" >>/etc/resolv.conf
	done
	# The DHCP server is kiln: init finds it here when the command line
	# does not say where kiln is (a UKI booted by UEFI HTTP Boot).
	echo "KILN_DHCP_SERVER='$serverid'" >/run/kiln-dhcp
	echo "kiln: dhcp: $interface $ip/${mask:-24} router ${router:-none}"
	;;
esac
exit 0

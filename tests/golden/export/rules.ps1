# fwpolicy: draft Windows Firewall allow rules from one firewall_policy snapshot
# window: [2026-08-01, 2026-08-08)
# thresholds: DistinctMachines >= 2, DaysObserved >= 2
# rows: 10 read, 2 below the thresholds left out
# rules: 8, 5 flagged for review (1 of them not Windows paths)
# remote addresses: restricted to the observed remote addresses, CIDR-collapsed
# ports: local ports for Inbound rules, remote ports for Outbound rules
# Rules flagged for review are commented out: read their REVIEW lines, fix, uncomment.
# Programs outside Windows (Linux, macOS) are listed as SKIPPED.
# Remove every rule of this draft: Remove-NetFirewallRule -Group 'fwpolicy 2026-08-08'

New-NetFirewallRule -DisplayName 'fwpolicy Inbound %windir%\system32\svchost.exe' -Direction Inbound -Action Allow -Program '%SystemRoot%\system32\svchost.exe' -Protocol TCP -LocalPort 135,445,3389,5985-5986 -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 12 machines, 7 days, 900 connections'
# SKIPPED (not a Windows path): Inbound /usr/sbin/sshd
# REVIEW: port list truncated: 128 of 200 shown
# REVIEW: remote address list truncated: 128 of 300 shown
# New-NetFirewallRule -DisplayName 'fwpolicy Outbound %programdata%\fleet\updater.exe' -Direction Outbound -Action Allow -Program '%ProgramData%\fleet\updater.exe' -Protocol UDP -RemotePort 1024-1151 -RemoteAddress '10.1.0.0/25' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 30 machines, 7 days, 123456 connections'
New-NetFirewallRule -DisplayName 'fwpolicy Outbound %programfiles%\google\chrome\application\chrome.exe' -Direction Outbound -Action Allow -Program '%ProgramFiles%\google\chrome\application\chrome.exe' -Protocol TCP -RemotePort 80,443 -RemoteAddress '142.250.1.0/30','2607:f8b0:4004:800::200e' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 40 machines, 7 days, 5000 connections'
New-NetFirewallRule -DisplayName 'fwpolicy Outbound %programfiles%\o''neil & sons\$env:app\`run tool.exe' -Direction Outbound -Action Allow -Program '%ProgramFiles%\o''neil & sons\$env:app\`run tool.exe' -Protocol UDP -RemotePort 5000-5002,6000 -RemoteAddress '192.0.2.10' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 2 machines, 2 days, 40 connections'
# REVIEW: placeholder <version> in the path: Windows Firewall program paths take no wildcards (list the actual folders)
# New-NetFirewallRule -DisplayName 'fwpolicy Outbound %programfilesx86%\contoso\agent\<version>\agent.exe' -Direction Outbound -Action Allow -Program '%ProgramFiles(x86)%\contoso\agent\<version>\agent.exe' -Protocol TCP -RemotePort 8443 -RemoteAddress '40.90.4.1' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 3 machines, 2 days, 70 connections'
# REVIEW: program under %UserProfile%, a per-user folder: Windows Firewall expands variables in its service's context, not the user's, so the rule must be expanded per user (C:\Users\<name>\...), and firewall_policy does not record user names
# REVIEW: protocols TcpV4, UdpV4: New-NetFirewallRule takes ports only with -Protocol TCP or UDP (choose one or split the rule)
# New-NetFirewallRule -DisplayName 'fwpolicy Outbound %userprofile%\appdata\local\microsoft\teams\current\teams.exe' -Direction Outbound -Action Allow -Program '%UserProfile%\appdata\local\microsoft\teams\current\teams.exe' -Protocol Any -RemotePort 443,3478-3481 -RemoteAddress '52.112.0.1','52.112.0.2' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 8 machines, 5 days, 3000 connections'
# REVIEW: protocols Tcp, Udp: New-NetFirewallRule takes ports only with -Protocol TCP or UDP (choose one or split the rule)
# New-NetFirewallRule -DisplayName 'fwpolicy Outbound %windir%\system32\svchost.exe' -Direction Outbound -Action Allow -Program '%SystemRoot%\system32\svchost.exe' -Protocol Any -RemotePort 53,80,123,443 -RemoteAddress '10.0.0.53','10.0.0.54','fe80::1' -Group 'fwpolicy 2026-08-08' -Description 'Draft by fwpolicy from firewall_policy [2026-08-01, 2026-08-08): 50 machines, 7 days, 20000 connections'

//! One attribution window of a 10 000-GPU site, computed by one core: 1 250 hosts × 8 GPUs, two
//! CPU packages and two DRAM zones each, a PDU outlet, three jobs per host (one ending and one
//! starting inside the window, two sharing a GPU), then the site split over every account.
//!
//! `cargo bench -p footprint-core --bench site_window`. One site-window must take under 1 s for a
//! core to keep up with the site at 10× real time with 10 s windows.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use footprint_core::attribution::{
    EnergyPiece, Holding, Policy, Resource, Usage, attribute, gpu_time_held,
};
use footprint_core::embodied::{HostDevices, split_embodied};
use footprint_core::facility::{SiteCarry, SiteMeters, share_hour, split_site_window};
use footprint_core::{Quality, Span, UnixNanos};

const HOSTS: u32 = 1_250;
const GPUS: u32 = 8;
const WINDOW_NS: i64 = 10_000_000_000;
/// 2024-06-01T12:00:00Z.
const START: i64 = 1_717_243_200_000_000_000;

struct Host {
    packages: [Vec<u32>; 2],
    holdings: Vec<Holding>,
    usage: Usage,
    devices: HostDevices,
}

fn span(from: i64, to: i64) -> Span {
    Span::new(UnixNanos(START + from), UnixNanos(START + to))
}

fn site() -> Vec<Host> {
    (0..HOSTS)
        .map(|host| {
            let job = |n: u32| host * 3 + n;
            let half = WINDOW_NS / 2;
            let holdings = vec![
                Holding {
                    job: job(0),
                    span: span(-WINDOW_NS, 2 * WINDOW_NS),
                    gpus: vec![0, 1, 2, 3],
                    cpus: (0..32).collect(),
                    ..Holding::default()
                },
                Holding {
                    job: job(1),
                    span: span(-WINDOW_NS, half),
                    gpus: vec![4, 5, 7],
                    cpus: (32..48).collect(),
                    ..Holding::default()
                },
                Holding {
                    job: job(2),
                    span: span(half / 2, 2 * WINDOW_NS),
                    gpus: vec![6, 7],
                    cpus: (48..56).collect(),
                    ..Holding::default()
                },
            ];
            let usage = Usage {
                gpu: BTreeMap::from([((7, job(1)), 40), ((7, job(2)), 60)]),
                cpu_ns: BTreeMap::from([(job(0), 250_000_000_000), (job(2), 30_000_000_000)]),
            };
            Host {
                packages: [(0..32).collect(), (32..64).collect()],
                holdings,
                usage,
                devices: HostDevices {
                    gpus: (0..GPUS)
                        .map(|gpu| (gpu, 318_000_000_000, 126_230_400_000_000_000))
                        .collect(),
                    server: Some((1_000_000_000_000, 126_230_400_000_000_000)),
                    cpus: 64,
                },
            }
        })
        .collect()
}

fn one_site_window(hosts: &[Host], policy: &Policy) -> u64 {
    let window = span(0, WINDOW_NS);
    let mut accounts: Vec<((u32, u32), u64)> = Vec::with_capacity(hosts.len() * 6);
    let mut embodied = 0u64;
    for (index, host) in hosts.iter().enumerate() {
        let mut pieces: Vec<EnergyPiece<'_>> = (0..GPUS)
            .map(|gpu| EnergyPiece {
                resource: Resource::Gpu(gpu),
                // Two samples per window: the second piece ends at the window's end.
                span: span(0, WINDOW_NS),
                energy_mj: 3_500_000 + u64::from(gpu) * 1_000,
                quality: Quality::Measured,
            })
            .collect();
        for cpus in &host.packages {
            pieces.push(EnergyPiece {
                resource: Resource::CpuPackage(cpus),
                span: window,
                energy_mj: 1_800_000,
                quality: Quality::Measured,
            });
            pieces.push(EnergyPiece {
                resource: Resource::Dram(cpus),
                span: window,
                energy_mj: 250_000,
                quality: Quality::Measured,
            });
        }
        pieces.push(EnergyPiece {
            resource: Resource::Host,
            span: window,
            energy_mj: 38_000_000,
            quality: Quality::Measured,
        });
        let result = attribute(&pieces, &host.holdings, &host.usage, policy);
        black_box(gpu_time_held(window, &host.holdings));
        embodied += split_embodied(window, &host.devices, &host.holdings).total_mg;
        let host_key = index as u32;
        for (job, energy) in &result.jobs {
            accounts.push(((host_key, *job), energy.total_mj()));
        }
        accounts.push(((host_key, u32::MAX), result.idle.total_mj()));
        accounts.push(((host_key, u32::MAX - 1), result.unattributed.total_mj()));
    }
    let it: u64 = accounts.iter().map(|(_, mj)| mj).sum();
    let meters = SiteMeters {
        energy: Some(footprint_core::Millijoules(it + it / 5)),
        water: Some(footprint_core::Millilitres(60_000)),
        assumed_pue_ppm: None,
    };
    let split = split_site_window(&accounts, &meters, &mut SiteCarry::default());
    let facility_mj = footprint_core::Millijoules(split.facility_mj);
    let location_mg = footprint_core::MgCo2ePerKwh(300_000)
        .carbon_of(facility_mj)
        .0;
    let shares = share_hour(location_mg, &[(split.facility_mj, accounts.as_slice())]);
    shares
        .iter()
        .map(|(parts, rest)| parts.iter().sum::<u64>() + rest)
        .sum::<u64>()
        + embodied
}

fn bench(criterion: &mut Criterion) {
    let hosts = site();
    let policy = Policy {
        package_baseline_mw: 60_000,
        dram_baseline_mw: 8_000,
        ..Policy::default()
    };
    criterion.bench_function("site_window_10000_gpus", |b| {
        b.iter(|| one_site_window(black_box(&hosts), &policy))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

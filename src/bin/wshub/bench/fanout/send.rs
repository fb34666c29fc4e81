//! The sending side of the fan-out scenario: flat out within a window,
//! or at a fixed rate, one message per system call unless told otherwise.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn send(
    s: usize,
    shared: &Shared,
    writer: &RawWriter,
    size: usize,
    rate: f64,
    binary: bool,
    start: Instant,
    deadline: Instant,
) -> u64 {
    let opcode = OpCode::Data(if binary { Data::Binary } else { Data::Text });
    let mut payload = vec![b'.'; size];
    let mut out = Vec::with_capacity(size + 14);
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let count = if shared.flat_out {
            // Wait until message seq - window has reached everyone.
            while seq - shared.done[s].load(Ordering::Acquire) >= shared.window {
                shared.waiting[s].store(true, Ordering::Release);
                if seq - shared.done[s].load(Ordering::Acquire) >= shared.window {
                    // Woken by the receiver that completes a message; the
                    // timeout only bounds a wait on a lost one.
                    thread::park_timeout(Duration::from_millis(20));
                }
                shared.waiting[s].store(false, Ordering::Release);
                if Instant::now() >= deadline {
                    return seq;
                }
            }
            let free = shared.window - (seq - shared.done[s].load(Ordering::Acquire));
            if shared.batch_writes { free } else { 1 }
        } else {
            // Senders are spread evenly over one period, as independent
            // users would be: aligned, all S messages would land together
            // and the latency would measure a burst of S × N deliveries.
            let phase = s as f64 / (rate * shared.senders as f64);
            let due = start + Duration::from_secs_f64(phase + seq as f64 / rate);
            if due > now {
                thread::sleep(due - now);
            }
            1
        };
        // Every message its own frame; with --batch-writes, all that the
        // window allows in one system call.
        out.clear();
        for _ in 0..count {
            stamp(
                &mut payload,
                shared.base.elapsed().as_nanos() as u64,
                s,
                seq,
            );
            RawWriter::append(opcode, &payload, &mut out);
            seq += 1;
        }
        if writer.write_all(&out).is_err() {
            break;
        }
    }
    seq
}

/// Writes the send time, sender and sequence number as hex at the start of
/// the payload: `{ns:016x}{sender:04x}{seq:08x}`.
fn stamp(payload: &mut [u8], ns: u64, sender: usize, seq: u64) {
    fn put(out: &mut [u8], mut v: u64) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    put(&mut payload[0..16], ns);
    put(&mut payload[16..20], sender as u64 & 0xffff);
    put(&mut payload[20..28], seq & 0xffff_ffff);
}

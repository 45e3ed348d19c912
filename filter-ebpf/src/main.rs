//! The data plane: an XDP program and a TC program that share one pipeline.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{xdp_action, TC_ACT_OK},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    #[xdp]
    pub fn filter_xdp(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[classifier]
    pub fn filter_tc(_ctx: TcContext) -> i32 {
        TC_ACT_OK
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

/// On the host this crate is only type-checked (clippy's first pass).
#[cfg(not(target_arch = "bpf"))]
fn main() {}

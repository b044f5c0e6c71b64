// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "forge-std/Test.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ConsentRegistry} from "../ConsentRegistry.sol";

contract ConsentRegistryTest is Test {
    event Granted(uint256 indexed tokenId, address indexed issuer);
    event Revoked(uint256 indexed tokenId, address indexed issuer);

    ConsentRegistry internal registry;
    address internal admin = makeAddr("admin");
    address internal hospitalA = makeAddr("hospitalA");
    address internal hospitalB = makeAddr("hospitalB");
    address internal mallory = makeAddr("mallory");

    bytes32 internal constant PSEUDONYM = keccak256("pseudonym-1");
    bytes32 internal constant GRANTEE = keccak256("Organization/b");
    bytes32 internal constant CONSENT = keccak256("Consent/1/_history/1");
    bytes32 internal TREAT = _terms(bytes32("TREAT"), 0);
    uint40 internal constant FROM = 1_700_000_000;
    uint40 internal constant UNTIL = 1_800_000_000;

    function setUp() public {
        registry = new ConsentRegistry(admin);
        bytes32 role = registry.MEMBER_ROLE();
        vm.startPrank(admin);
        registry.grantRole(role, hospitalA);
        registry.grantRole(role, hospitalB);
        vm.stopPrank();
        vm.warp(FROM + 1);
    }

    /// The off-chain commitment: SHA-256(pseudonym || grantee || purpose || consentHash || serial).
    function _terms(bytes32 purpose, uint32 serial) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(PSEUDONYM, GRANTEE, purpose, CONSENT, serial));
    }

    function _grant(address who, bytes32 terms, uint40 from, uint40 until) internal returns (uint256) {
        vm.prank(who);
        return registry.grant(terms, from, until);
    }

    function _grantTreat() internal returns (uint256) {
        return _grant(hospitalA, TREAT, FROM, UNTIL);
    }

    // ------------------------------------------------------------------ grant

    function test_grant_stores_issuer_period_and_active_status() public {
        uint256 id = _grantTreat();
        (address issuer, uint40 from, uint40 until, uint8 status) = registry.tokenState(id);
        assertEq(issuer, hospitalA);
        assertEq(from, FROM);
        assertEq(until, UNTIL);
        assertEq(status, registry.ACTIVE());
        assertTrue(registry.isActive(id));
        assertTrue(registry.locked(id));
    }

    function test_grant_id_commits_to_terms_period_issuer_chain_and_contract() public {
        uint256 expected =
            uint256(keccak256(abi.encode(block.chainid, address(registry), hospitalA, TREAT, FROM, UNTIL)));
        assertEq(_grantTreat(), expected);
        assertEq(registry.tokenIdOf(hospitalA, TREAT, FROM, UNTIL), expected);
    }

    function test_grant_emits_one_granted_event() public {
        uint256 id = registry.tokenIdOf(hospitalA, TREAT, FROM, UNTIL);
        vm.expectEmit(address(registry));
        emit Granted(id, hospitalA);
        vm.recordLogs();
        _grantTreat();
        assertEq(vm.getRecordedLogs().length, 1);
    }

    function test_grant_repeat_of_active_token_is_silent_noop() public {
        uint256 id = _grantTreat();
        vm.recordLogs();
        assertEq(_grantTreat(), id);
        assertEq(vm.getRecordedLogs().length, 0);
    }

    function test_grant_by_non_member_reverts() public {
        bytes32 role = registry.MEMBER_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, mallory, role)
        );
        _grant(mallory, TREAT, FROM, UNTIL);
    }

    function test_grant_rejects_empty_terms() public {
        vm.expectRevert(ConsentRegistry.EmptyTerms.selector);
        _grant(hospitalA, 0, FROM, UNTIL);
    }

    function test_grant_rejects_period_ending_before_it_starts() public {
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.InvalidPeriod.selector, UNTIL, FROM));
        _grant(hospitalA, TREAT, UNTIL, FROM);
    }

    function test_regrant_of_revoked_token_reverts_but_new_serial_works() public {
        uint256 id = _grantTreat();
        vm.prank(hospitalA);
        registry.revoke(id);
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.TokenRevoked.selector, id));
        _grantTreat();
        uint256 again = _grant(hospitalA, _terms(bytes32("TREAT"), 1), FROM, UNTIL);
        assertTrue(again != id);
        assertTrue(registry.isActive(again));
        assertFalse(registry.isActive(id));
    }

    function test_same_fields_by_two_members_are_two_tokens() public {
        uint256 a = _grant(hospitalA, TREAT, FROM, UNTIL);
        uint256 b = _grant(hospitalB, TREAT, FROM, UNTIL);
        assertTrue(a != b);
        (address issuer,,,) = registry.tokenState(b);
        assertEq(issuer, hospitalB);
    }

    // ------------------------------------------------------------------ replay

    function test_token_id_differs_on_another_chain() public {
        uint256 here = registry.tokenIdOf(hospitalA, TREAT, FROM, UNTIL);
        vm.chainId(block.chainid + 1);
        uint256 there = registry.tokenIdOf(hospitalA, TREAT, FROM, UNTIL);
        assertTrue(here != there);
    }

    function test_token_of_one_deployment_is_unknown_to_another() public {
        uint256 id = _grantTreat();
        ConsentRegistry other = new ConsentRegistry(admin);
        bytes32 role = other.MEMBER_ROLE();
        vm.prank(admin);
        other.grantRole(role, hospitalA);
        assertFalse(other.isActive(id));
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.UnknownToken.selector, id));
        other.locked(id);
        // The same call on the other deployment mints a different token.
        vm.prank(hospitalA);
        uint256 otherId = other.grant(TREAT, FROM, UNTIL);
        assertTrue(otherId != id);
    }

    // ------------------------------------------------------------------ revoke

    function test_revoke_by_issuer_ends_token_and_emits() public {
        uint256 id = _grantTreat();
        vm.expectEmit(address(registry));
        emit Revoked(id, hospitalA);
        vm.prank(hospitalA);
        registry.revoke(id);
        (address issuer, uint40 from, uint40 until, uint8 status) = registry.tokenState(id);
        assertEq(status, registry.REVOKED());
        assertEq(issuer, hospitalA);
        assertEq(from, FROM);
        assertEq(until, UNTIL);
        assertFalse(registry.isActive(id));
        assertTrue(registry.locked(id));
    }

    function test_revoke_twice_is_silent_noop() public {
        uint256 id = _grantTreat();
        vm.startPrank(hospitalA);
        registry.revoke(id);
        vm.recordLogs();
        registry.revoke(id);
        vm.stopPrank();
        assertEq(vm.getRecordedLogs().length, 0);
    }

    function test_revoke_by_other_member_reverts() public {
        uint256 id = _grantTreat();
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.NotIssuer.selector, id, hospitalB));
        vm.prank(hospitalB);
        registry.revoke(id);
    }

    function test_revoke_unknown_token_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.UnknownToken.selector, 42));
        vm.prank(hospitalA);
        registry.revoke(42);
    }

    function test_issuer_may_revoke_after_leaving_consortium() public {
        uint256 id = _grantTreat();
        bytes32 role = registry.MEMBER_ROLE();
        vm.prank(admin);
        registry.revokeRole(role, hospitalA);
        vm.prank(hospitalA);
        registry.revoke(id);
        assertFalse(registry.isActive(id));
    }

    // ------------------------------------------------------------------ period and ERC-5192

    function test_is_active_only_inside_period() public {
        uint256 id = _grant(hospitalA, TREAT, FROM + 100, FROM + 200);
        vm.warp(FROM + 99);
        assertFalse(registry.isActive(id));
        vm.warp(FROM + 100);
        assertTrue(registry.isActive(id));
        vm.warp(FROM + 199);
        assertTrue(registry.isActive(id));
        vm.warp(FROM + 200);
        assertFalse(registry.isActive(id));
    }

    function test_open_ended_token_never_expires() public {
        uint256 id = _grant(hospitalA, TREAT, FROM, 0);
        vm.warp(type(uint40).max);
        assertTrue(registry.isActive(id));
    }

    function test_unknown_token_is_not_active_and_not_locked() public {
        assertFalse(registry.isActive(7));
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.UnknownToken.selector, 7));
        registry.locked(7);
    }

    function test_supports_erc5192_and_access_control() public view {
        assertTrue(registry.supportsInterface(0xb45a3c0e));
        assertTrue(registry.supportsInterface(type(IAccessControl).interfaceId));
        assertFalse(registry.supportsInterface(0x80ac58cd)); // not a transferable ERC-721
    }

    function test_no_transfer_functions() public {
        uint256 id = _grantTreat();
        vm.prank(hospitalA);
        (bool ok,) = address(registry).call(
            abi.encodeWithSignature("transferFrom(address,address,uint256)", hospitalA, mallory, id)
        );
        assertFalse(ok);
        vm.prank(hospitalA);
        (ok,) = address(registry).call(
            abi.encodeWithSignature("safeTransferFrom(address,address,uint256)", hospitalA, mallory, id)
        );
        assertFalse(ok);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_any_field_change_changes_the_token(
        bytes32 terms,
        uint40 from,
        uint40 until,
        uint8 which
    ) public view {
        uint256 base = registry.tokenIdOf(hospitalA, terms, from, until);
        which = which % 4;
        uint256 changed;
        if (which == 0) changed = registry.tokenIdOf(hospitalB, terms, from, until);
        else if (which == 1) changed = registry.tokenIdOf(hospitalA, ~terms, from, until);
        else if (which == 2) changed = registry.tokenIdOf(hospitalA, terms, ~from, until);
        else changed = registry.tokenIdOf(hospitalA, terms, from, ~until);
        assertTrue(changed != base);
    }

    function testFuzz_terms_commit_to_purpose_and_serial(bytes32 purpose, uint32 serial) public pure {
        vm.assume(purpose != bytes32("TREAT") || serial != 0);
        assertTrue(_terms(purpose, serial) != _terms(bytes32("TREAT"), 0));
    }

    function testFuzz_grant_validates_then_round_trips(bytes32 terms, uint40 from, uint40 until) public {
        vm.prank(hospitalA);
        if (terms == 0) {
            vm.expectRevert(ConsentRegistry.EmptyTerms.selector);
            registry.grant(terms, from, until);
            return;
        }
        if (until != 0 && until <= from) {
            vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.InvalidPeriod.selector, from, until));
            registry.grant(terms, from, until);
            return;
        }
        uint256 id = registry.grant(terms, from, until);
        (address issuer, uint40 f, uint40 u, uint8 status) = registry.tokenState(id);
        assertEq(issuer, hospitalA);
        assertEq(f, from);
        assertEq(u, until);
        assertEq(status, registry.ACTIVE());
    }

    function testFuzz_is_active_matches_period(uint40 from, uint40 length, uint40 now_) public {
        vm.assume(from > 0 && from < type(uint40).max);
        uint40 until = length == 0 ? 0 : uint40(bound(uint256(from) + length, uint256(from) + 1, type(uint40).max));
        vm.assume(until == 0 || until > from);
        uint256 id = _grant(hospitalA, TREAT, from, until);
        vm.warp(now_);
        bool expected = from <= now_ && (until == 0 || now_ < until);
        assertEq(registry.isActive(id), expected);
    }

    function testFuzz_only_the_issuer_revokes(address caller) public {
        uint256 id = _grantTreat();
        vm.prank(caller);
        if (caller != hospitalA) {
            vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.NotIssuer.selector, id, caller));
            registry.revoke(id);
            assertTrue(registry.isActive(id));
        } else {
            registry.revoke(id);
            assertFalse(registry.isActive(id));
        }
    }

    function testFuzz_revoked_never_active_again(uint40 now_, uint32 serial) public {
        bytes32 terms = _terms(bytes32("TREAT"), serial);
        uint256 id = _grant(hospitalA, terms, FROM, 0);
        vm.prank(hospitalA);
        registry.revoke(id);
        vm.warp(now_);
        assertFalse(registry.isActive(id));
        vm.expectRevert(abi.encodeWithSelector(ConsentRegistry.TokenRevoked.selector, id));
        _grant(hospitalA, terms, FROM, 0);
    }

    function testFuzz_purpose_a_token_is_not_purpose_b(bytes32 other) public {
        vm.assume(other != bytes32("TREAT"));
        uint256 treat = _grant(hospitalA, TREAT, FROM, UNTIL);
        uint256 candidate = registry.tokenIdOf(hospitalA, _terms(other, 0), FROM, UNTIL);
        assertTrue(registry.isActive(treat));
        assertFalse(registry.isActive(candidate));
    }
}
